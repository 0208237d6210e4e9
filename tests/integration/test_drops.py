"""A reason for every drop: each connection the server closes on its own logs one line.

The line says why (README, "Drops"), which client (``none`` before it has an
id), from which address (the client's own port, checked here) and which
process closed it; ``--log-format json`` gives the same as fields.
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from tests.integration.harness import TIMEOUT, Client, Server
from tests.integration.test_flow import sender
from tests.integration.test_tls import ca, pki, stall, tls_flags, wait_for  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def drop_lines(server: Server, reason: str) -> list[re.Match[str]]:
    line = (
        rf"INFO drop reason={reason} client=(?P<client>\d+|none) "
        r'peer=127\.0\.0\.1:(?P<port>\d+) process="(?P<process>[a-z0-9 ]+)"(?: \((?P<why>.*)\))?$'
    )
    return list(re.finditer(line, server.log(), re.M))


def wait_drop(server: Server, reason: str, count: int = 1) -> list[re.Match[str]]:
    """The drop lines of ``reason`` once there are ``count``; fails if more come meanwhile."""
    wait_for(lambda: len(drop_lines(server, reason)) >= count, f"no drop line: {server.log()}")
    found = drop_lines(server, reason)
    assert len(found) == count, server.log()
    return found


def port_of(c: Client | socket.socket) -> str:
    sock = c.sock if isinstance(c, Client) else c
    return str(sock.getsockname()[1])


def test_an_idle_client(start_server):
    server = start_server("--idle-timeout", "0.3")
    a = server.client()
    a.expect("ERROR IDLE")
    a.expect_closed()
    (line,) = wait_drop(server, "idle")
    assert line["client"] == str(a.id) and line["port"] == port_of(a)
    assert re.fullmatch(r"worker [12]", line["process"])
    assert line["why"] == "silent for --idle-timeout 0.3s"


def test_a_client_that_reads_nothing_of_its_replies(start_server):
    server = start_server("--sendq", "65536", "--stall-timeout", "0.5", "--linger", "0.5")
    a = server.client(rcvbuf=4096)
    writer = sender(a.sock, b"HELP\n" * 50_000)
    (line,) = wait_drop(server, "stalled")
    assert (line["client"], line["port"]) == (str(a.id), port_of(a))
    assert line["why"] == "read none of its output for --stall-timeout 0.5s"
    writer.join(TIMEOUT)


def test_one_client_too_many(start_server):
    server = start_server("--max-clients", "1")
    a = server.client()
    b = server.connect()
    b.expect("ERROR FULL")
    b.expect_closed()
    (line,) = wait_drop(server, "full")
    assert (line["client"], line["port"]) == ("none", port_of(b))
    assert line["process"].startswith("worker ")
    a.quiet()


def test_a_tls_handshake_that_never_ends(start_server, pki):  # noqa: F811
    server = start_server(*tls_flags(pki, "--tls-handshake-timeout", "0.3"))
    with stall(server) as stalled:
        assert stalled.recv(1) == b""
        (line,) = wait_drop(server, "handshake_timeout")
        assert (line["client"], line["port"]) == ("none", port_of(stalled))
    assert line["why"] == "TLS handshake not done within 0.3s (--tls-handshake-timeout)"


def test_a_plain_client_on_the_tls_port(start_server, pki):  # noqa: F811
    server = start_server(*tls_flags(pki))
    c = Client(server.host, server.tls_port)
    c.send("GET FREE")  # more than a TLS record's header, and no TLS
    c.expect_closed()
    (line,) = wait_drop(server, "handshake_failed")
    assert (line["client"], line["port"]) == ("none", port_of(c))
    c.close()


def test_every_client_when_the_server_stops(start_server):
    server = start_server()
    clients = [server.client() for _ in range(3)]
    server.stop()
    for c in clients:
        c.expect("OUTAGE")
        c.expect_closed()
    lines = wait_drop(server, "stopping", 3)
    assert {(x["client"], x["port"]) for x in lines} == {(str(c.id), port_of(c)) for c in clients}
    assert {x["process"] for x in lines} == {"worker 1", "worker 2"}


def test_json_logs_are_one_object_a_line_with_the_drop_apart(start_server):
    server = start_server("--idle-timeout", "0.3", "--log-format", "json")
    a = server.client()
    a.expect("ERROR IDLE")
    a.expect_closed()

    def records() -> list[dict[str, object]]:
        return [json.loads(line) for line in server.log().splitlines()]

    wait_for(lambda: any(r.get("event") == "drop" for r in records()), server.log())
    (drop,) = [r for r in records() if r.get("event") == "drop"]
    assert drop["reason"] == "idle" and drop["client"] == a.id
    assert drop["peer"] == f"127.0.0.1:{port_of(a)}"
    assert drop["level"] == "INFO" and str(drop["process"]).startswith("worker ")
    assert drop["detail"] == "silent for --idle-timeout 0.3s"
    assert {r["process"] for r in records()} >= {"supervisor"}


def test_a_client_whose_replies_pile_up_past_sendq(start_server):
    """Replies to its own GETs, which it does not read: one that finds the socket full
    and more than --sendq to queue cuts it (flow control keeps lines from partners
    under it, so a reply is what gets there)."""
    server = start_server("--sendq", "1000")
    named = [server.client() for _ in range(60)]
    for i, c in enumerate(named):  # a GET reply of about 2 kB: 60 names of 24 characters
        c.send(f"NAME {'n' * 20}{i:04d}")
    for i, c in enumerate(named):
        c.expect(f"NAMED {'n' * 20}{i:04d}")
    slow = server.client(rcvbuf=4096)
    slow.sock.sendall(b"GET\n" * 2000)
    (line,) = wait_drop(server, "sendq")
    assert line["client"] == str(slow.id) and line["port"] == port_of(slow)
    assert line["why"] == "send queue over --sendq 1000 bytes"
