"""Every line of protocol v1 against the real server, peers on the same and on different workers."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.integration.harness import pair, two_clients
from wire.commands import help_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_welcome_gives_the_smallest_free_id(server):
    a, b, c = server.client(), server.client(), server.client()
    assert (a.id, b.id, c.id) == (1, 2, 3)
    b.send("#CLOSE#")
    b.expect("BYE")
    b.expect_closed()
    a.send("GET")
    a.expect("CLIENTS 1=FREE 3=FREE")
    assert server.client().id == 2
    assert server.client().id == 4


def test_get_lists_everyone_and_get_free_only_the_free(server, placement):
    a, b = two_clients(server, placement)
    c = server.client()
    pair(a, b)
    everyone = sorted(x.id for x in server.opened)
    c.send("GET")
    c.expect(
        "CLIENTS " + " ".join(f"{i}={'BUSY' if i in (a.id, b.id) else 'FREE'}" for i in everyone)
    )
    c.send("  get   free  ")
    c.expect("CLIENTS " + " ".join(f"{i}=FREE" for i in everyone if i not in (a.id, b.id)))
    a.send("GET")  # in a session, a line is a message
    b.expect("MSG GET")


def test_ping_help_and_blank_lines(server):
    a = server.client()
    a.send("PING")
    a.expect("PONG")
    a.send("")
    a.send("   ")
    a.send("help")
    for line in help_lines():
        a.expect(line)
    a.quiet()


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("CONNECT 99", "ERROR OFFLINE 99"),
        ("CONNECT", "ERROR USAGE CONNECT <id>"),
        ("CONNECT x", "ERROR OFFLINE x"),  # a name nobody holds
        ("CONNECT x!", "ERROR USAGE CONNECT <id>"),
        ("MATCH later", "ERROR USAGE MATCH [NEW]"),
        ("CANCEL", "ERROR NOT_WAITING"),
        ("NAME 12", "ERROR USAGE NAME [<name>]"),
        ("NAME a+b", "ERROR USAGE NAME [<name>]"),
        ("CONNECT 0", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 1 2", "ERROR USAGE CONNECT <id>"),
        ("GET ALL", "ERROR USAGE GET [FREE]"),
        ("PING now", "ERROR USAGE PING"),
        ("#GOODBYE#", "ERROR NOT_IN_CHAT"),
        ("hello there", "ERROR UNKNOWN_COMMAND hello"),
        ("Frobnicate", "ERROR UNKNOWN_COMMAND Frobnicate"),
    ],
)
def test_bad_commands_get_an_error_and_lose_nothing(server, line, reply):
    a = server.client()
    a.send(line)
    a.expect(reply)
    a.quiet()


def test_connect_to_a_busy_client(server, placement):
    a, b = two_clients(server, placement)
    c = server.client()
    pair(a, b)
    c.send(f"CONNECT {a.id}")
    c.expect(f"ERROR BUSY {a.id}")


def test_session_relay_goodbye_and_pair_again(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.send("hello b")
    b.expect("MSG hello b")
    b.send("  GET  ")  # in a session this is a message, blanks and all
    a.expect("MSG   GET  ")
    a.send("")
    b.expect("MSG ")
    a.send("#GOODBYE#")
    a.expect(f"ENDED {b.id}")
    b.expect(f"ENDED {a.id}")
    a.send("GET")
    a.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE")
    pair(b, a)
    b.send("again")
    a.expect("MSG again")


def test_close_in_a_session_ends_it_for_the_partner(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.send("last words")
    a.send("#CLOSE#")
    a.expect("BYE")
    a.expect_closed()
    b.expect("MSG last words")
    b.expect(f"ENDED {a.id}")
    b.send("GET")
    b.expect(f"CLIENTS {b.id}=FREE")


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_a_vanishing_client_counts_as_close(server, placement, how):
    a, b = two_clients(server, placement)
    pair(a, b)
    if how == "reset":
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.sock.close()
    else:
        a.sock.shutdown(socket.SHUT_WR)
    b.expect(f"ENDED {a.id}")
    b.send("GET")
    b.expect(f"CLIENTS {b.id}=FREE")


def test_half_closed_client_gets_its_answers_then_bye(server):
    a = server.client()
    a.send("GET\nPING\nCONNECT 7\n")
    a.sock.shutdown(socket.SHUT_WR)
    a.expect(f"CLIENTS {a.id}=FREE")
    a.expect("PONG")
    a.expect("ERROR OFFLINE 7")
    a.expect("BYE")
    a.expect_closed()


def test_replies_come_in_the_order_of_the_lines(server):
    a, b = server.client(), server.client()
    a.send(f"GET\nPING\nCONNECT {b.id}\nsent right after connect\n#GOODBYE#\nPING\n")
    a.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE")
    a.expect("PONG")
    a.expect(f"CONNECTED {b.id}")
    a.expect(f"ENDED {b.id}")
    a.expect("PONG")
    b.expect(f"CONNECTED {a.id}")
    b.expect("MSG sent right after connect")
    b.expect(f"ENDED {a.id}")


def test_crlf_is_accepted(server, placement):
    a, b = two_clients(server, placement)
    a.send(b"PING\r\n")
    a.expect("PONG")
    pair(a, b)
    a.send(b"with crlf\r\n")
    b.expect("MSG with crlf")
    a.send(b"#GOODBYE#\r\n")
    a.expect(f"ENDED {b.id}")


def test_too_long_and_bad_utf8_lose_nothing_else(start_server):
    server = start_server("--max-line", "64")
    a, b = server.client(), server.client()
    a.send("x" * 64)
    a.expect("ERROR UNKNOWN_COMMAND " + "x" * 64)
    a.send("y" * 65)
    a.expect("ERROR TOO_LONG")
    a.send(b"z" * 10_000 + b"\nPING\n")
    a.expect("ERROR TOO_LONG")
    a.expect("PONG")
    a.send(b"\xff\xfe bad\n")
    a.expect("ERROR ENCODING")
    pair(a, b)
    a.send(b"ok 1\n" + b"w" * 100 + b"\n\xc3\x28\nok 2\n")
    a.expect("ERROR TOO_LONG")
    a.expect("ERROR ENCODING")
    b.expect("MSG ok 1")
    b.expect("MSG ok 2")
    a.send("héllo ✓")
    b.expect("MSG héllo ✓")


def test_full_server_refuses_and_closes(start_server):
    server = start_server("--max-clients", "2")
    a, b = server.client(), server.client()
    c = server.connect()
    c.expect("ERROR FULL")
    c.expect_closed()
    b.send("#CLOSE#")
    b.expect("BYE")
    assert server.client().id == 2
    a.quiet()


def test_slow_consumer_is_cut_and_its_partner_told(start_server, placement):
    server = start_server("--linger", "60", "--stall-timeout", "1")  # b reads after the flood
    a, b = two_clients(server, placement)
    pair(a, b)
    line = b"f" * 1000 + b"\n"
    a.sock.setblocking(False)
    sent = 0
    ended = f"ENDED {b.id}".encode()
    chunk = line * 64
    rest = b""
    while ended not in a.buf:  # flood until the server cuts b and tells a
        try:
            rest = rest or chunk
            n = a.sock.send(rest)
            rest = rest[n:]
            sent += n
        except BlockingIOError:
            pass
        try:
            a.buf += a.sock.recv(65536)
        except BlockingIOError:
            pass
        assert sent < 500_000_000, "b was never cut"
    a.sock.setblocking(True)
    a.send(rest)  # finish the last line
    a.expect(f"ENDED {b.id}")
    lines = []
    while True:
        got = b.line()
        if got != "MSG " + "f" * 1000:
            lines.append(got)
            break
    assert lines == ["ERROR SLOW_CONSUMER"]
    b.expect_closed()
    # what a sent after the cut reached the server while it was FREE: commands now
    a.send("PING")
    while (got := a.line()) != "PONG":
        assert got == "ERROR UNKNOWN_COMMAND " + "f" * 64


def test_sigterm_sends_outage_to_everyone(start_server, placement):
    server = start_server()
    a, b = two_clients(server, placement)
    c = server.client()
    pair(a, b)
    assert server.stop() == 0
    for who in (a, b, c):
        who.expect("OUTAGE")
        who.expect_closed()
    assert not server.wait_survivors()
