"""The peers' configs and the IRC lines of scripts/ircpeers.py, and the peer rows of the bench.

No IRC server runs here: the configs are read back as the daemons would read
them (tags and attributes; sections and keys) and checked for every limit
that would measure itself instead of the server.
"""

from __future__ import annotations

import array
import configparser
import math
import re
from pathlib import Path

import pytest

from scripts.bench import (
    PER_CPU,
    Job,
    Row,
    add_peer_ratios,
    memory_beside,
    pair_rows,
    peer_runs,
    peer_targets,
    table,
)
from scripts.benchload import PairsResult, Usage
from scripts.ircpeers import (
    PEERS,
    SENDQ,
    Message,
    inspircd_config,
    ngircd_config,
    not_installed,
    parse_message,
    parse_peers,
    privmsg,
    registration,
)

DIR = Path("/tmp/peer-x")


def inspircd_tags(text: str) -> dict[str, dict[str, str]]:
    """``<tag a="b" ...>`` -> {tag: {a: b}} (each tag once in these configs)."""
    tags: dict[str, dict[str, str]] = {}
    for name, body in re.findall(r"<(\w+)((?:\s+\w+=\"[^\"]*\")*)\s*>", text):
        assert name not in tags, f"<{name}> twice"
        tags[name] = dict(re.findall(r"(\w+)=\"([^\"]*)\"", body))
    return tags


def ngircd_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("\n".join(line.strip() for line in text.splitlines()))
    return parser


def test_inspircd_config_listens_on_loopback_and_keeps_its_files_in_the_directory():
    tags = inspircd_tags(inspircd_config(6123, DIR, 10000))
    assert tags["config"] == {"format": "xml"}
    assert tags["bind"] == {"address": "127.0.0.1", "port": "6123", "type": "clients"}
    assert tags["pid"] == {"file": "/tmp/peer-x/inspircd.pid"}
    assert tags["files"] == {"motd": "/tmp/peer-x/motd.txt"}
    assert tags["log"]["target"] == "/tmp/peer-x/inspircd.log"
    assert "module" not in tags  # no connflood, connectban, dnsbl, ident


def test_inspircd_connect_class_has_no_flood_clone_or_lookup_limits():
    connect = inspircd_tags(inspircd_config(6123, DIR, 10000))["connect"]
    assert connect["allow"] == "*"
    assert connect["fakelag"] == "no"
    # a command adds 1000 to the penalty; commandrate (per second) takes it away
    assert int(connect["threshold"]) * 1000 >= 4 * 10**9
    assert int(connect["commandrate"]) >= 4 * 10**9
    assert int(connect["commandrate"]) < 2**32  # read as an unsigned int
    assert connect["hardsendq"] == connect["softsendq"] == connect["recvq"] == str(SENDQ)
    for key in ("localmax", "globalmax", "limit"):
        assert int(connect[key]) > 10000, key
    assert connect["resolvehostnames"] == "no"
    assert connect["useident"] == "no"
    assert int(connect["pingfreq"]) >= 3600
    performance = inspircd_tags(inspircd_config(6123, DIR, 10000))["performance"]
    assert int(performance["softlimit"]) > 10000
    assert performance["clonesonconnect"] == "no"


def test_inspircd_limits_follow_the_clients_asked_for():
    connect = inspircd_tags(inspircd_config(1, DIR, 50000))["connect"]
    assert int(connect["limit"]) > 50000


def test_ngircd_config_has_no_penalties_limits_or_lookups():
    conf = ngircd_sections(ngircd_config(6124, DIR, 10000))
    assert dict(conf["Global"]) == {
        "Name": "bench.invalid",
        "Info": "bench peer",
        "AdminInfo1": "bench",
        "AdminEMail": "bench@bench.invalid",
        "Listen": "127.0.0.1",
        "Ports": "6124",
        "MotdPhrase": '"bench"',
        "PidFile": "/tmp/peer-x/ngircd.pid",
    }
    limits = conf["Limits"]
    assert limits["MaxPenaltyTime"] == "0"  # penalties off
    assert limits["MaxConnections"] == limits["MaxConnectionsIP"] == "0"  # 0: unlimited
    assert int(limits["PingTimeout"]) >= 3600
    assert int(limits["MaxNickLength"]) >= len("c99999")
    assert dict(conf["Options"]) == {"DNS": "no", "Ident": "no", "PAM": "no"}


def test_peers_are_named_once_in_order_from_repeats_and_comma_lists():
    assert parse_peers(["ngircd,inspircd", "ngircd"]) == ["ngircd", "inspircd"]
    assert parse_peers(["inspircd,"]) == ["inspircd"]
    assert parse_peers([]) == []
    with pytest.raises(ValueError, match="unknown --peer 'unrealircd'"):
        parse_peers(["inspircd,unrealircd"])


def test_a_missing_peer_says_how_to_install_it():
    assert not_installed("inspircd") == "--peer inspircd: not installed (apt-get install inspircd)"
    assert set(PEERS) == {"inspircd", "ngircd"}


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            ":b0!u@127.0.0.1 PRIVMSG b1 :0000000001 0000000000000000042 xxxx",
            Message("b0!u@127.0.0.1", "PRIVMSG", ("b1", "0000000001 0000000000000000042 xxxx")),
        ),
        ("PING :bench.invalid", Message("", "PING", ("bench.invalid",))),
        (":srv 001 b0 :Welcome, b0", Message("srv", "001", ("b0", "Welcome, b0"))),
        (":srv PONG srv :registered", Message("srv", "PONG", ("srv", "registered"))),
        (":srv 005 b0 A=1 B :supported", Message("srv", "005", ("b0", "A=1", "B", "supported"))),
        (":a!b@c privmsg b1 :x :y", Message("a!b@c", "PRIVMSG", ("b1", "x :y"))),
        (":srv MODE b0 +i", Message("srv", "MODE", ("b0", "+i"))),
        ("ERROR :Closing link", Message("", "ERROR", ("Closing link",))),
        (":srv 422 b0 :", Message("srv", "422", ("b0", ""))),
    ],
)  # fmt: skip
def test_irc_lines_split_into_prefix_command_and_params(line: str, want: Message):
    assert parse_message(line) == want


def test_the_nick_is_the_prefix_up_to_the_bang():
    assert parse_message(":b12!~u@127.0.0.1 PRIVMSG b13 :x").nick == "b12"
    assert parse_message(":bench.invalid 001 b0 :hi").nick == "bench.invalid"


@pytest.mark.parametrize("line", ["", ":prefix-only", "   "])
def test_a_line_without_a_command_is_refused(line: str):
    with pytest.raises(ValueError, match="not an IRC line"):
        parse_message(line)


def test_registration_and_privmsg_are_crlf_lines():
    assert registration("b3") == b"NICK b3\r\nUSER u 0 * :bench b3\r\n"
    assert privmsg("b1", "hello there") == b"PRIVMSG b1 :hello there\r\n"


# ---- the bench's peer rows ---------------------------------------------------------------


def row(server: str, workload: str, size: int, placement: str, metric: str, value: float) -> Row:
    return Row(workload, size, placement, server, metric, value, "u")


def test_peer_rows_are_pingpong_and_stream_in_one_process_and_conns():
    assert peer_runs(Job("pingpong", 32, "same"))
    assert peer_runs(Job("stream", 32, "same"))
    assert peer_runs(Job("conns", 10000, "-"))
    assert not peer_runs(Job("pingpong", 32, "cross"))
    assert not peer_runs(Job("churn", 32, "same"))
    assert not peer_runs(Job("flood", 30, "same"))


def test_peer_ratios_compare_every_placement_of_ours_with_the_peers_same_row():
    rows = [
        row("inspircd", "pingpong", 32, "same", "rate", 100.0),
        row("ngircd", "pingpong", 32, "same", "rate", 50.0),
        row("w2", "pingpong", 32, "same", "rate", 120.0),
        row("w2", "pingpong", 32, "cross", "rate", 80.0),
        row("ref", "pingpong", 32, "same", "rate", 30.0),
        row("w2", "conns", 10000, "-", "rss", 90.0),
        row("inspircd", "conns", 10000, "-", "rss", 30.0),
    ]
    add_peer_ratios(rows, ["inspircd", "ngircd"])
    assert rows[2].ratio_peer == {"inspircd": 1.2, "ngircd": 2.4}
    assert rows[3].ratio_peer == {"inspircd": 0.8, "ngircd": 1.6}
    assert rows[4].ratio_peer == {}  # the reference is not ours
    assert rows[0].ratio_peer == rows[1].ratio_peer == {}
    assert rows[5].ratio_peer == {"inspircd": 3.0}
    assert rows[2].json()["ratio_inspircd"] == 1.2
    head = table(rows).splitlines()[0].split()
    assert head[-4:] == ["x", "inspircd", "x", "ngircd"]


def test_peer_targets_pass_and_fail_on_the_ratios():
    rows = [
        row("inspircd", "pingpong", 32, "same", "rate", 100.0),
        row("w2", "pingpong", 32, "same", "rate", 100.0),  # 1.0x: PASS
        row("inspircd", "pingpong", 32, "same", "p99", 2.0),
        row("w2", "pingpong", 32, "same", "p99", 2.5),  # above: FAIL
        row("inspircd", "pingpong", 32, "same", PER_CPU, 100.0),
        row("w2", "pingpong", 32, "same", PER_CPU, 99.0),  # FAIL
        row("inspircd", "stream", 32, "same", "rate", 100.0),
        row("w2", "stream", 32, "same", "rate", 121.0),  # >= 1.2x: PASS
    ]
    add_peer_ratios(rows, ["inspircd"])
    got = {t.goal: t.ok for t in peer_targets(rows, "w2")}
    assert got == {
        "pingpong 32 rate >= 1x inspircd": True,
        "pingpong 256 rate >= 1x inspircd": None,
        "pingpong 32 p99 <= inspircd's": False,
        f"pingpong 32 {PER_CPU} >= 1x inspircd": False,
        f"pingpong 256 {PER_CPU} >= 1x inspircd": None,
        "stream 32 rate >= 1.2x inspircd": True,
    }


def test_memory_is_reported_beside_for_every_server_that_has_it():
    rows = [
        row("w2", "conns", 10000, "-", "rss", 90.0),
        row("w2", "conns", 10000, "-", "pss", 60.0),
        row("inspircd", "conns", 10000, "-", "rss", 26.0),
        row("inspircd", "conns", 10000, "-", "pss", 24.0),
        row("ngircd", "conns", 10000, "-", "rss", 31.0),  # no pss: left out
    ]
    assert memory_beside(rows, ["w2", "inspircd", "ngircd"]) == [
        "10,000 idle clients: w2 RSS 90.0 MB, PSS 60.0 MB; inspircd RSS 26.0 MB, PSS 24.0 MB"
    ]


def pairs_result(ops: int, server_cpu: float) -> PairsResult:
    counts = {"ops": ops, "window_ns": 3 * 10**9, "lost": 0, "ooo": 0, "errors": 0}
    counts |= {"unfinished": 0, "pair_min": 1, "pair_max": 1}
    usage = Usage(wall=3.0, server=server_cpu, load=1.0)
    return PairsResult(counts, array.array("q", [10**6] * 10), usage)


def test_pingpong_rows_carry_round_trips_per_cpu_second_of_the_server():
    rows = pair_rows(Job("pingpong", 32, "same"), "w2", pairs_result(150_000, 2.5), {})
    per_cpu = [r for r in rows if r.metric == PER_CPU]
    assert [(r.value, r.unit) for r in per_cpu] == [(60_000.0, "rt/cpu-s")]
    assert rows[0].metric == "rate" and rows[0].value == 50_000.0
    idle = pair_rows(Job("pingpong", 32, "same"), "w2", pairs_result(150_000, 0.0), {})
    assert math.isnan(next(r.value for r in idle if r.metric == PER_CPU))
    stream = pair_rows(Job("stream", 32, "same"), "w2", pairs_result(150_000, 2.5), {})
    assert PER_CPU not in {r.metric for r in stream}
