"""Backpressure and stalls: nothing accepted is dropped, no reader who reads is cut,
and no client, however greedy, makes a worker hold more than its limits.

Each test is a run that broke a promise of docs/PROTOCOL.md before the server
learned to push back on senders (credit between workers, held readers).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import psutil
import pytest

from tests.integration.harness import Client, LegacyClient, Server, pair

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def three_on_two_workers(server: Server) -> tuple[Client, Client, Client]:
    """a and c on worker 1, b on worker 2 (round-robin placement)."""
    a, b, c = server.client(), server.client(), server.client()
    assert [server.worker_of(x) for x in (a, b, c)] == [1, 2, 1]
    return a, b, c


def legacy_client(server: Server, probe: Client, rcvbuf: int = 0) -> tuple[LegacyClient, int]:
    """A legacy client (no WELCOME) and its id, seen appearing in the probe's GET."""

    def ids() -> set[int]:
        probe.send("GET")
        return {int(item.split("=")[0]) for item in probe.line().split()[1:]}

    before = ids()
    c = LegacyClient(server.host, server.legacy_port, rcvbuf=rcvbuf)
    server.opened.append(c)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while not (new := ids() - before):
        assert time.monotonic() < deadline, "the legacy client never registered"
    return c, new.pop()


def rss(server: Server, name: str) -> int:
    return int(psutil.Process(server.pid_of(name)).memory_info().rss)


def sync(c: Client) -> None:
    """A round trip through ``c``'s worker: what its sockets sent before has been read.

    Only for bytes that left their sender at once: with Nagle's algorithm a write
    behind an unacknowledged one may wait for the server's delayed ACK.
    """
    c.quiet()


def read_lines(c: Client, count: int, timeout: float = 30.0) -> list[str]:
    """The next ``count`` lines, read in bulk (``Client.line`` costs a copy per line)."""
    deadline = time.monotonic() + timeout
    while (have := c.buf.count(b"\n")) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{have} of {count} lines within {timeout}s"
        c.sock.settimeout(left)
        try:
            data = c.sock.recv(1 << 20)
        except TimeoutError:
            continue
        assert data, f"closed after {have} of {count} lines"
        c.buf += data
    *lines, c.buf = c.buf.split(b"\n", count)
    return [line.decode() for line in lines]


def sender(sock: socket.socket, data: bytes) -> threading.Thread:
    """Write ``data`` from a thread: a server that pushes back blocks the writer, not the test."""

    def run() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# ---- 1. a session that ends as the matchmaker dies ---------------------------------


@pytest.mark.parametrize("end", ["#GOODBYE#", "#CLOSE#", "eof"])
def test_lines_before_the_end_survive_a_matchmaker_kill(start_server, end):
    """A said 50 lines and its end in one write, and the matchmaker died with them in
    its pipe: B got ENDED and none of the lines. Now B gets all 50, then ENDED."""
    server = start_server("--migrate", "off")
    a, b, c = three_on_two_workers(server)
    pair(a, b)
    a.send("warm")
    b.expect("MSG warm")
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay: see sync
    matchmaker = server.pid_of("matchmaker")
    os.kill(matchmaker, signal.SIGSTOP)
    try:
        lines = [f"last words {i}" for i in range(50)]
        tail = "" if end == "eof" else end + "\n"
        a.send(("".join(x + "\n" for x in lines) + tail).encode())
        if end == "eof":
            a.sock.shutdown(socket.SHUT_WR)
        sync(c)  # a's worker has read a's write and queued it for the stopped matchmaker
    finally:
        os.kill(matchmaker, signal.SIGKILL)
    assert [b.line() for _ in lines] == [f"MSG {x}" for x in lines]
    b.expect(f"ENDED {a.id}")
    if end == "#GOODBYE#":
        a.expect(f"ENDED {b.id}")
        a.quiet()
    else:
        a.expect("BYE")
        a.expect_closed()
    b.quiet()


def test_legacy_lines_before_the_end_survive_a_matchmaker_kill(start_server):
    """The same for a legacy client, which never moves, with --migrate on."""
    server = start_server("--legacy-port", "0")
    probe = server.client()  # worker 1
    old, old_id = legacy_client(server, probe)  # worker 2
    b, c = server.client(), server.client()  # worker 1, worker 2
    assert [server.worker_of(x) for x in (b, c)] == [1, 2]
    old.send(f"CONNECT {b.id}")
    old.expect(f"CONNECT SUCCESS {b.id}")
    b.expect(f"CONNECTED {old_id}")
    assert server.worker_of(old) == 2  # type: ignore[arg-type]
    old.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    matchmaker = server.pid_of("matchmaker")
    os.kill(matchmaker, signal.SIGSTOP)
    try:
        lines = [f"legacy words {i}" for i in range(50)]
        old.sock.sendall(b"".join(old.record(x) for x in [*lines, "#GOODBYE#"]))
        sync(c)
    finally:
        os.kill(matchmaker, signal.SIGKILL)
    assert [b.line() for _ in lines] == [f"MSG {x}" for x in lines]
    b.expect(f"ENDED {old_id}")
    old.expect("TERMINATED")
    b.quiet()


# ---- 2. a stalled matchmaker ------------------------------------------------------


def stream(a: Client, count: int, width: int = 100) -> tuple[list[str], threading.Thread]:
    lines = [f"{i:08d} " + "s" * (width - 9) for i in range(count)]
    return lines, sender(a.sock, "".join(x + "\n" for x in lines).encode())


@pytest.mark.parametrize("then", ["continued", "killed"])
def test_a_stalled_matchmaker_neither_cuts_a_reader_nor_drops_lines(start_server, then):
    """A streams to a reading B across workers while the matchmaker is stopped: the
    backlog landed on B at once (SLOW_CONSUMER) and, capped at --sendq, the copy kept
    for resending dropped its oldest lines. Now A is held; B gets every line once."""
    server = start_server("--migrate", "off", "--sendq", str(1 << 16))
    a, b = server.client(), server.client(rcvbuf=16384)  # b's kernel holds little for it
    assert [server.worker_of(x) for x in (a, b)] == [1, 2]
    pair(a, b)
    lines, writer = stream(a, 30_000)
    b.expect(f"MSG {lines[0]}")
    matchmaker = server.pid_of("matchmaker")
    os.kill(matchmaker, signal.SIGSTOP)
    time.sleep(2.0)  # the fault: the matchmaker stays stopped this long while A writes
    os.kill(matchmaker, signal.SIGCONT if then == "continued" else signal.SIGKILL)
    assert read_lines(b, len(lines) - 1) == [f"MSG {x}" for x in lines[1:]]
    writer.join(10)
    a.send("after the stall")
    b.expect("MSG after the stall")


# ---- 3. relayed sessions push back ------------------------------------------------


def test_a_relayed_stream_holds_the_sender_not_its_worker(start_server):
    """A streamed 1,000-byte lines to a reading B on the other worker: A's worker grew
    by 981 MiB in 8 s. Now A's worker holds a window, and B gets every line in order."""
    server = start_server("--migrate", "off")
    a, b, _c = three_on_two_workers(server)
    pair(a, b)
    before = rss(server, "worker 1")
    lines, writer = stream(a, 40_000, width=1000)  # 40 MB
    peak = 0
    for i, x in enumerate(lines):
        assert b.line() == f"MSG {x}"
        if i % 2000 == 0:
            peak = max(peak, rss(server, "worker 1"))
    writer.join(10)
    assert peak - before < 24 << 20, f"A's worker grew by {(peak - before) >> 20} MiB"


def test_a_legacy_stream_to_another_worker_leaves_room_for_newcomers(start_server):
    """A legacy client (never moved) streaming to a line client on the other worker grew
    its worker by 8 MiB/s, and new clients placed there got no WELCOME within 60 s."""
    server = start_server("--legacy-port", "0")
    probe = server.client()  # worker 1
    old, old_id = legacy_client(server, probe)  # worker 2
    b = server.client()  # worker 1
    old.send(f"CONNECT {b.id}")
    old.expect(f"CONNECT SUCCESS {b.id}")
    b.expect(f"CONNECTED {old_id}")
    before = rss(server, "worker 2")
    records = [f"{i:06d} " + "r" * 240 for i in range(100_000)]  # 25 MB of records
    writer = sender(old.sock, b"".join(old.record(x) for x in records))
    peak, done = 0, 0
    newcomers: list[Client] = []
    while done < len(records):
        batch = read_lines(b, min(5000, len(records) - done))
        assert batch == [f"MSG {x}" for x in records[done : done + len(batch)]]
        done += len(batch)
        peak = max(peak, rss(server, "worker 2"))
        if done == 20_000:  # meanwhile newcomers, half of them on the streaming worker
            newcomers = [server.client() for _ in range(10)]
    writer.join(10)
    for c in newcomers:
        c.quiet()
    grew = (peak - before) >> 20
    assert peak - before < 24 << 20, f"the legacy sender's worker grew by {grew} MiB"


# ---- 4. memory past every limit ---------------------------------------------------


def test_clients_that_never_read_their_replies_cost_at_most_their_limits(start_server):
    """20 clients each sending 256 KiB of HELP lines and reading nothing grew the worker
    by 203 MiB. Now each is held at --sendq, then cut as a slow consumer."""
    server = start_server("--stall-timeout", "2", "--linger", "30", workers=1)
    probe = server.client()
    before = rss(server, "worker 1")
    greedy = [server.client(rcvbuf=4096) for _ in range(20)]
    writers = [sender(c.sock, b"HELP\n" * (256 * 1024 // 5)) for c in greedy]
    peak = 0
    deadline = time.monotonic() + 30
    while server.log().count("drop reason=stalled") < len(greedy):  # cut at --stall-timeout
        assert time.monotonic() < deadline, server.log()[-2000:]
        peak = max(peak, rss(server, "worker 1"))
        probe.quiet()  # the worker still serves everyone else meanwhile
    bound = 20 * (4096 + (1 << 20))
    assert peak - before < bound + (16 << 20), f"grew by {(peak - before) >> 20} MiB"
    for c, writer in zip(greedy, writers, strict=True):
        writer.join(10)
        c.sock.settimeout(20)
        data = b""
        while chunk := c.sock.recv(1 << 20):
            data += chunk
        assert data.endswith(b"\nERROR SLOW_CONSUMER\n"), data[-80:]
        assert set(data[: -len(b"ERROR SLOW_CONSUMER\n")].split(b"\n")) <= {
            *(line.encode() for line in help_block()),
            b"",
        }
    probe.quiet()


def help_block() -> list[str]:
    from wire.commands import help_lines

    return list(help_lines())


def test_get_then_a_flood_of_short_lines_stays_within_the_documented_bound(start_server):
    """40 clients sending GET and then 256 KiB of short lines: +118 MiB against the
    documented bound of 40 MiB (lines waiting behind the GET were held one object each)."""
    server = start_server(workers=1)
    probe = server.client()
    clients = [server.client() for _ in range(40)]
    before = rss(server, "worker 1")
    matchmaker = server.pid_of("matchmaker")
    os.kill(matchmaker, signal.SIGSTOP)  # every GET waits
    try:
        for c in clients:
            c.sock.sendall(b"GET\n" + b"x\n" * (128 * 1024))
        sync(probe)  # the worker has read what the clients sent
        peak = rss(server, "worker 1")
    finally:
        os.kill(matchmaker, signal.SIGCONT)
    for c in clients:
        assert c.line().startswith("CLIENTS ")
        c.expect("ERROR UNKNOWN_COMMAND x")
        peak = max(peak, rss(server, "worker 1"))
    assert peak - before < 40 * (4096 + (1 << 20)), f"grew by {(peak - before) >> 20} MiB"
    probe.quiet()


def test_a_legacy_partner_that_never_reads_is_cut_and_its_leftovers_freed(start_server):
    """A line client streaming to a legacy partner that never reads: 22.6 MiB per pair,
    19.6 MiB still held 30 s later. Now the writer is held at --sendq, the reader cut
    after --stall-timeout, and its socket reset after --linger."""
    server = start_server("--legacy-port", "0", "--stall-timeout", "1", "--linger", "1")
    probe = server.client()
    old, old_id = legacy_client(server, probe, rcvbuf=4096)
    a = server.client()
    a.send(f"CONNECT {old_id}")
    a.expect(f"CONNECTED {old_id}")
    worker = f"worker {server.worker_of(old)}"  # type: ignore[arg-type]
    before = rss(server, worker)
    writer = sender(a.sock, b"x\n" * (128 * 1024))  # 256 KiB: 128k records of 256 bytes
    a.expect(f"ENDED {old_id}", timeout=30)
    assert rss(server, worker) - before < (1 << 20) + (16 << 20)
    writer.join(10)
    local = old.sock.getsockname()
    held = psutil.Process(server.pid_of(worker))
    deadline = time.monotonic() + 10
    while any(c.raddr and tuple(c.raddr) == local for c in held.net_connections("tcp")):
        assert time.monotonic() < deadline, "the worker still holds the reader that never reads"
        time.sleep(0.05)  # polling the worker's sockets: nothing to wait on
    a.send("PING")  # what a sent after the cut reached the server while it was FREE
    while (got := a.line()) != "PONG":
        assert got == "ERROR UNKNOWN_COMMAND x"


def test_a_slow_reader_is_held_for_not_cut(start_server, placement):
    """A floods B, who reads, slowly: B was cut at --sendq. Now A waits for B."""
    from tests.integration.harness import two_clients

    server = start_server("--sendq", str(1 << 16), "--stall-timeout", "2")
    a, b = two_clients(server, placement)
    pair(a, b)
    lines, writer = stream(a, 20_000)  # 2 MB, thirty times B's --sendq
    for i, x in enumerate(lines):
        assert b.line() == f"MSG {x}"
        if i % 100 == 0:
            time.sleep(0.01)  # the slow reader's pace, not a synchronisation
    writer.join(10)
    a.send("still paired")
    b.expect("MSG still paired")


# ---- 7. idle is silence, not a paused read ----------------------------------------


def test_a_client_waiting_on_a_stalled_matchmaker_is_not_idle(start_server):
    """--idle-timeout 3 and the matchmaker stalled for 6 s: a client with a request
    waiting that sent PING every half second was cut with ERROR IDLE."""
    server = start_server("--idle-timeout", "3")
    a, b = server.client(), server.client()
    matchmaker = server.pid_of("matchmaker")
    os.kill(matchmaker, signal.SIGSTOP)
    try:
        a.send("GET")
        for _ in range(12):
            a.send("PING")
            time.sleep(0.5)  # the client's own pace: what it does while it waits
    finally:
        os.kill(matchmaker, signal.SIGCONT)
    a.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE")
    for _ in range(12):
        a.expect("PONG")
    a.quiet()
