"""wire.replies: each reply's exact wire line, and ``parse_reply`` as its inverse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import ErrorCode, ProtocolError
from wire.replies import (
    Bye,
    Cancelled,
    Clients,
    Connected,
    Ended,
    Error,
    HelpLine,
    Msg,
    Named,
    Outage,
    Pong,
    Unknown,
    Waiting,
    Welcome,
    clients_line,
    parse_reply,
)

EXACT = [
    (Welcome(1), "WELCOME 1"),
    (Welcome(10000), "WELCOME 10000"),
    (Clients(()), "CLIENTS"),
    (Clients(((1, 0, ""),)), "CLIENTS 1=FREE"),
    (Clients(((1, 1, ""), (2, 1, ""), (3, 0, ""))), "CLIENTS 1=BUSY 2=BUSY 3=FREE"),
    (Connected(2), "CONNECTED 2"),
    (Msg("hello world"), "MSG hello world"),
    (Msg(""), "MSG "),
    (Msg("  padded  "), "MSG   padded  "),
    (Msg("#GOODBYE#"), "MSG #GOODBYE#"),
    (Msg("ERROR FULL"), "MSG ERROR FULL"),
    (Ended(7), "ENDED 7"),
    (Bye(), "BYE"),
    (Outage(), "OUTAGE"),
    (Pong(), "PONG"),
    (HelpLine("PING  check"), "HELP PING  check"),
    (Error(ErrorCode.FULL), "ERROR FULL"),
    (Error(ErrorCode.OFFLINE, "9"), "ERROR OFFLINE 9"),
    (Error(ErrorCode.USAGE, "CONNECT <id>"), "ERROR USAGE CONNECT <id>"),
    (Error(ErrorCode.UNKNOWN_COMMAND, "foo"), "ERROR UNKNOWN_COMMAND foo"),
    (Error(ErrorCode.NOT_IN_CHAT), "ERROR NOT_IN_CHAT"),
    (Error(ErrorCode.SLOW_CONSUMER), "ERROR SLOW_CONSUMER"),
    (Unknown("SOMETHING new"), "SOMETHING new"),
]


@pytest.mark.parametrize(("reply", "line"), EXACT, ids=[line for _, line in EXACT])
def test_line_is_exact(reply, line):
    assert reply.line() == line


@pytest.mark.parametrize(("reply", "line"), EXACT, ids=[line for _, line in EXACT])
def test_parse_reply_inverts_line(reply, line):
    assert parse_reply(line) == reply


def test_clients_line():
    assert clients_line([]) == "CLIENTS"
    assert clients_line(iter([(4, 0, ""), (9, 1, "")])) == "CLIENTS 4=FREE 9=BUSY"


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_matches_protocol_error_line(code):
    assert Error(code).line() == ProtocolError(code).line() == f"ERROR {code.value}"
    assert Error(code, "x y").line() == ProtocolError(code, "x y").line()
    assert parse_reply(ProtocolError(code, "12").line()) == Error(code, "12")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "WELCOME",
        "WELCOME x",
        "WELCOME -1",
        "WELCOME 1 2",
        "WELCOME \uff11",  # fullwidth digit one
        "welcome 1",
        "CONNECTED",
        "CONNECTED 1.5",
        "ENDED +3",
        "CLIENTS 1",
        "CLIENTS 1=free",
        "CLIENTS 1=IDLE",
        "CLIENTS x=FREE",
        "CLIENTS =FREE",
        "CLIENTS 1=FREE junk",
        "BYE now",
        "OUTAGE soon",
        "PONG PONG",
        "ERROR",
        "ERROR NOPE",
        "ERROR full",
        "ERROR  FULL",
        "error FULL",
        "msg hi",
        "HELLO",
        " WELCOME 1",
    ],
)
def test_unrecognised_lines_are_unknown_and_kept_whole(line):
    assert parse_reply(line) == Unknown(line)
    assert parse_reply(line).line() == line


def test_msg_and_help_keep_the_rest_verbatim():
    assert parse_reply("MSG") == Msg("")  # lenient: the server always sends the space
    assert parse_reply("HELP") == HelpLine("")
    assert parse_reply("MSG ") == Msg("")
    assert parse_reply("MSG  two spaces") == Msg(" two spaces")
    assert parse_reply("MSG WELCOME 1") == Msg("WELCOME 1")
    assert parse_reply("HELP a  b") == HelpLine("a  b")


# ---- round trips ------------------------------------------------------------------

ids = st.integers(1, 10**12)


@given(st.text())
def test_msg_round_trips(text):
    assert parse_reply(Msg(text).line()) == Msg(text)


@given(st.text())
def test_help_line_round_trips(text):
    assert parse_reply(HelpLine(text).line()) == HelpLine(text)


@given(ids, st.sampled_from([Welcome, Connected, Ended]))
def test_id_replies_round_trip(number, cls):
    assert parse_reply(cls(number).line()) == cls(number)


names = st.one_of(st.just(""), st.from_regex(r"[A-Za-z_-][A-Za-z0-9_-]{0,23}", fullmatch=True))


@given(st.dictionaries(ids, st.tuples(st.integers(0, 2), names), max_size=30))
def test_clients_round_trips(status):
    entries = tuple((cid, state, name) for cid, (state, name) in sorted(status.items()))
    line = Clients(entries).line()
    assert parse_reply(line) == Clients(entries)
    words = ("FREE", "BUSY", "WAITING")
    assert line.split()[1:] == [
        f"{cid}={words[state]}" + (f"={name}" if name else "") for cid, state, name in entries
    ]
    # a reader of id=STATUS that splits on "=" and takes two fields loses nothing
    assert [tuple(item.split("=")[:2]) for item in line.split()[1:]] == [
        (str(cid), words[state]) for cid, state, _ in entries
    ]


def test_waiting_cancelled_and_named_lines():
    assert [r.line() for r in (Waiting(), Cancelled(), Named("Ann"), Named())] == [
        "WAITING",
        "CANCELLED",
        "NAMED Ann",
        "NAMED",
    ]
    assert parse_reply("CLIENTS 1=FREE 2=BUSY=bo 3=WAITING=x-y") == Clients(
        ((1, 0, ""), (2, 1, "bo"), (3, 2, "x-y"))
    )
    assert parse_reply("CLIENTS 1=LATE") == Unknown("CLIENTS 1=LATE")


@given(st.sampled_from(list(ErrorCode)), st.text())
def test_error_round_trips(code, detail):
    assert parse_reply(Error(code, detail).line()) == Error(code, detail)


@given(st.one_of(st.text(), st.sampled_from([e[1] for e in EXACT]).map(lambda s: s + " 0")))
def test_parse_reply_never_raises_and_is_stable(line):
    reply = parse_reply(line)
    if isinstance(reply, Unknown):
        assert reply.text == line
    assert parse_reply(reply.line()) == reply
