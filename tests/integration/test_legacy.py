"""The original C++ client's dialect on --legacy-port: records, words, pacing, mixed chats."""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.harness import TIMEOUT, Client, LegacyClient, Server, pair
from wire import legacy as legacy_words

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def server(start_server) -> Server:
    return start_server("--legacy-port", "0")


def ids(probe: Client) -> set[int]:
    probe.send("GET")
    line = probe.line()
    return {int(item.split("=")[0]) for item in line.split()[1:]}


def legacy(server: Server, probe: Client) -> tuple[LegacyClient, int]:
    """A legacy client and its id (it gets no WELCOME: the probe sees it appear in GET)."""
    before = ids(probe)
    c = LegacyClient(server.host, server.legacy_port)
    server.opened.append(c)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while not (new := ids(probe) - before):
        assert time.monotonic() < deadline, "the legacy client never registered"
    (cid,) = new
    return c, cid


def test_get_lists_statuses_by_position(server):
    probe = server.client()  # id 1
    old, old_id = legacy(server, probe)  # id 2
    a, b = server.client(), server.client()  # ids 3, 4
    pair(a, b)
    old.send("GET")
    old.expect("GET -1 0 0 1 1 ")
    assert old_id == 2


@pytest.mark.parametrize("who_asks", ["legacy", "line"])
def test_legacy_and_line_clients_chat_across_workers(server, who_asks):
    probe = server.client()  # worker 1
    old, old_id = legacy(server, probe)  # worker 2
    line = server.client()  # worker 1
    assert server.worker_of(old) != server.worker_of(line)  # type: ignore[arg-type]
    if who_asks == "legacy":
        old.send(f"CONNECT {line.id}")
        old.expect(f"CONNECT SUCCESS {line.id}")
        line.expect(f"CONNECTED {old_id}")
    else:
        line.send(f"CONNECT {old_id}")
        line.expect(f"CONNECTED {old_id}")
        old.expect(f"CONNECT SUCCESS% {line.id}")
    old.send("hello from 1998")
    line.expect("MSG hello from 1998")
    line.send("hello back")
    old.expect("SEND hello back")
    line.send("x" * 600)  # longer than a record: several SEND records
    texts = [old.recv() for _ in range(3)]
    assert all(t.startswith("SEND ") for t in texts)
    assert "".join(t[5:] for t in texts) == "x" * 600
    old.send("#GOODBYE#")
    old.expect("TERMINATED")
    line.expect(f"ENDED {old_id}")
    line.send("GET")
    line.expect(f"CLIENTS {probe.id}=FREE {old_id}=FREE {line.id}=FREE")


def test_two_legacy_clients_and_close(server):
    probe = server.client()
    a, a_id = legacy(server, probe)
    b, b_id = legacy(server, probe)
    a.send(f"CONNECT {b_id}")
    a.expect(f"CONNECT SUCCESS {b_id}")
    b.expect(f"CONNECT SUCCESS% {a_id}")
    b.send("ping pong")
    a.expect("SEND ping pong")
    a.send("#CLOSE#")
    a.expect("ABORT")
    b.expect("TERMINATED")
    with pytest.raises(AssertionError, match="closed"):
        a.recv()


def test_connect_failures_in_the_original_words(server):
    probe = server.client()
    old, old_id = legacy(server, probe)
    x, y = server.client(), server.client()
    pair(x, y)
    for line, reply in [
        ("CONNECT 99", "CONNECT OFFLINE"),
        (f"CONNECT {old_id}", "CONNECT SELF"),
        (f"CONNECT {x.id}", "CONNECT BUSY"),
        ("CONNECT abc", "INVALID COMMAND"),
        ("FROBNICATE", "INVALID COMMAND"),
        ("#GOODBYE#", "INVALID COMMAND"),
    ]:
        old.send(line)
        old.expect(reply)


def test_split_coalesced_and_garbage_padded_records(server):
    probe = server.client()
    old, old_id = legacy(server, probe)
    peer = server.client()
    data = old.record(f"CONNECT {peer.id}") + old.record("one") + old.record("two\r\n")
    old.sock.sendall(data[:100])
    old.sock.sendall(data[100:300])
    old.sock.sendall(data[300:])  # the rest, coalesced
    old.expect(f"CONNECT SUCCESS {peer.id}")
    peer.expect(f"CONNECTED {old_id}")
    peer.expect("MSG one")
    peer.expect("MSG two")
    whole = old.record("no nul at all")
    full = b"A" * 256  # a record with no NUL is 256 bytes of text
    old.sock.sendall(whole + full)
    peer.expect("MSG no nul at all")
    peer.expect("MSG " + "A" * 256)


def test_records_are_written_one_at_a_time_and_paced(server):
    probe = server.client()
    old, _ = legacy(server, probe)
    old.send("HELP")
    got = [old.recv() for _ in legacy_words.HELP]
    assert got == [f"SEND {line}" for line in legacy_words.HELP]
    gaps = [b - a for a, b in zip(old.times, old.times[1:], strict=False)]
    assert min(gaps) > 0.015, gaps  # 20 ms apart, less what the kernel's timing blurs


def test_outage_reaches_legacy_clients(server):
    probe = server.client()
    old, _ = legacy(server, probe)
    assert server.stop() == 0
    old.expect("OUTAGE")
    probe.expect("OUTAGE")


def test_ping_and_help_answer_in_words_the_original_client_prints(server):
    """PONG showed as an empty line from "(Friend)" (the original client prints a record
    from its fifth byte on), and HELP spoke of BYE and MSG, which it never sees."""
    probe = server.client()
    old, _ = legacy(server, probe)
    old.send("PING")
    old.expect("SEND PONG")
    old.send("HELP")
    for line in legacy_words.HELP:
        old.expect(f"SEND {line}")


def everything_until_closed(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"not closed in time; got {data!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("legacy_port", [True, False])
def test_the_original_client_on_the_line_port_is_told_where_to_go(start_server, legacy_port):
    """It read WELCOME 1 as "(Friend): OME 1" and then hung: its records end no line."""
    server = start_server(*(["--legacy-port", "0"] if legacy_port else []))
    old = LegacyClient(server.host, server.port)  # the line port
    server.opened.append(old)  # type: ignore[arg-type]
    welcome = b""
    while not welcome.endswith(b"\n"):  # as the original client reads it before it types
        old.sock.settimeout(TIMEOUT)
        chunk = old.sock.recv(256)
        assert chunk, welcome
        welcome += chunk
    assert welcome == b"WELCOME 1\n"
    old.send("GET")
    hint = legacy_words.wrong_port(server.legacy_port if legacy_port else None)
    assert everything_until_closed(old.sock) == hint
    if legacy_port:
        assert f"connects to port {server.legacy_port}".encode() in hint
    logged = "client 1 sent a legacy record to the line port; told it the legacy port "
    logged += f"({server.legacy_port if legacy_port else 'off'}) and closed it"
    assert logged in server.log()
    line = server.client()  # nobody else is hurt, and the id came back
    assert line.id == 1
