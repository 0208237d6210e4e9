"""A session across workers moves one socket to the partner's worker.

Observed from outside: which worker process holds each client's connection
(psutil), and the exact lines both clients get. A move must never cost a line,
reorder one, or show either client the session before its ``CONNECTED``.
"""

from __future__ import annotations

import os
import signal
import socket

import psutil
import pytest

from tests.integration.harness import LegacyClient, pair, serving, two_clients
from tests.integration.test_faults import new_pid, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_the_requester_moves_to_its_partners_worker_and_keeps_its_id(server):
    a, b = two_clients(server, "cross")
    before = server.worker_of(b)
    pair(a, b)
    assert server.worker_of(a) == server.worker_of(b) == before
    a.send("hello")
    b.expect("MSG hello")
    b.send("hi")
    a.expect("MSG hi")
    a.send("#GOODBYE#")
    a.expect(f"ENDED {b.id}")
    b.expect(f"ENDED {a.id}")
    a.send("GET")
    a.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE")
    b.send(f"CONNECT {a.id}")  # on one worker now: pairs again without a move
    b.expect(f"CONNECTED {a.id}")
    a.expect(f"CONNECTED {b.id}")
    assert server.worker_of(a) == before


def test_the_client_on_the_fuller_worker_is_the_one_that_moves(server):
    a, b, c = server.client(), server.client(), server.client()
    first, second, third = (server.worker_of(x) for x in (a, b, c))
    assert first == third != second  # round robin (from whichever worker was up first)
    pair(b, a)  # a's worker holds two clients, b's one: a gives way, not b
    assert server.worker_of(a) == server.worker_of(b) == second
    b.send("x")
    a.expect("MSG x")
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=BUSY {b.id}=BUSY {c.id}=FREE")


def test_lines_and_a_half_line_sent_with_the_connect_travel_with_the_socket(server):
    a, b = two_clients(server, "cross")
    a.send(f"CONNECT {b.id}\nfirst\nsecond\nthi".encode())
    a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")
    a.send(b"rd\n")
    for text in ("first", "second", "third"):
        b.expect(f"MSG {text}")
    assert server.worker_of(a) == server.worker_of(b)


def test_a_client_with_replies_still_unsent_stays_and_the_session_is_relayed(start_server):
    server = start_server("--sendq", str(64 << 20))
    a, b = two_clients(server, "cross")
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)
    # 8.7 MB of ERROR replies b does not read: more than the kernel buffers take (4 MB
    # at most for the server's side), so b's worker still holds some when b's CONNECT
    # asks for the move
    junk = b"z" * 64 + b"\n"
    b.send(junk * 100_000 + f"CONNECT {a.id}\n".encode())
    a.expect(f"CONNECTED {b.id}")
    connected = f"CONNECTED {a.id}\n".encode()
    got = bytearray(b.buf)
    while not got.endswith(connected) and len(got) < 20 << 20:
        b.sock.settimeout(10)
        chunk = b.sock.recv(1 << 20)
        assert chunk, "closed"
        got += chunk
    lines = bytes(got).split(b"\n")
    assert lines[-2:] == [connected.strip(), b""]
    assert lines[:-2] == [b"ERROR UNKNOWN_COMMAND " + junk.strip()] * 100_000
    b.buf = b""
    a.send("across")
    b.expect("MSG across")
    assert server.worker_of(a) != server.worker_of(b)
    b.send("back")
    a.expect("MSG back")


def test_legacy_clients_stay_where_they_are(start_server):
    """A legacy connection's records are paced, so it never moves; its session is relayed."""
    server = start_server("--legacy-port", "0")
    probe = server.client()  # worker 1
    old = LegacyClient(server.host, server.legacy_port)  # worker 2
    server.opened.append(old)  # type: ignore[arg-type]
    wait_for(lambda: probe.send("GET") or probe.line().endswith("2=FREE"), what="legacy id 2")
    old.send(f"CONNECT {probe.id}")  # a tie: the requester would move, but cannot
    old.expect(f"CONNECT SUCCESS {probe.id}")
    probe.expect("CONNECTED 2")
    assert server.worker_of(old) != server.worker_of(probe)  # type: ignore[arg-type]
    old.send("hello from 1998")
    probe.expect("MSG hello from 1998")
    probe.send("hello back")
    old.expect("SEND hello back")


def test_a_pair_moved_onto_a_killed_worker_is_lost_together_and_freed(server):
    a, b, c = server.client(), server.client(), server.client()
    pair(b, a)  # a moves to worker 2
    old = server.pid_of("worker 2")
    os.kill(old, signal.SIGKILL)
    for gone in (a, b):
        gone.expect_closed()
    wait_for(lambda: new_pid(server, "worker 2", old), what="a new worker 2")
    c.send("GET")
    c.expect(f"CLIENTS {c.id}=FREE")
    d = server.client()
    assert d.id == 1  # their ids are free again


def test_no_line_is_lost_when_both_ends_talk_right_after_connected(server):
    """The target is told first and may answer before the requester has read CONNECTED."""
    for _ in range(20):
        a, b = two_clients(server, "cross")
        a.send((f"CONNECT {b.id}\n" + "".join(f"a{i}\n" for i in range(50))).encode())
        b.expect(f"CONNECTED {a.id}")
        b.send("".join(f"b{i}\n" for i in range(50)).encode())
        a.expect(f"CONNECTED {b.id}")
        assert [a.line() for _ in range(50)] == [f"MSG b{i}" for i in range(50)]
        assert [b.line() for _ in range(50)] == [f"MSG a{i}" for i in range(50)]
        a.send("#CLOSE#")
        a.expect("BYE")
        b.expect(f"ENDED {a.id}")
        b.send("#CLOSE#")
        b.expect("BYE")
        for x in (a, b):
            x.expect_closed()
            server.opened.remove(x)
            x.close()


def test_a_burst_of_sessions_moves_every_pair_together_and_stays_balanced(server):
    """More moves at once than a datagram socket queues (10): they travel together."""
    clients = [server.client() for _ in range(48)]
    where = [server.worker_of(c) for c in clients]
    assert where == where[:2] * 24 and set(where) == {1, 2}
    pairs = [(clients[i], clients[i + 1]) for i in range(0, 48, 2)]
    for a, b in pairs:
        a.send(f"CONNECT {b.id}")
    for a, b in pairs:
        a.expect(f"CONNECTED {b.id}")
        b.expect(f"CONNECTED {a.id}")
    homes = [server.worker_of(a) for a, _ in pairs]
    assert homes == [server.worker_of(b) for _, b in pairs]
    assert sorted(homes) == [1] * 12 + [2] * 12
    for a, b in pairs:
        a.send(f"to {b.id}")
    for _, b in pairs:
        b.expect(f"MSG to {b.id}")


@pytest.mark.parametrize("when", ["at once", "after the first pair"])
def test_moves_under_way_when_the_matchmaker_dies_still_end_in_sessions(server, when):
    """Whether a move was decided, in flight or placed when the matchmaker died, every pair
    ends up in one session that carries lines both ways, and nobody is listed wrongly."""
    clients = [server.client() for _ in range(24)]
    pairs = [(clients[i], clients[i + 1]) for i in range(0, 24, 2)]  # each across workers
    assert all(server.worker_of(a) != server.worker_of(b) for a, b in pairs)
    old = server.pid_of("matchmaker")
    for a, b in pairs:
        a.send(f"CONNECT {b.id}")
    if when == "after the first pair":  # later pairs are somewhere in their moves
        pairs[0][0].expect(f"CONNECTED {pairs[0][1].id}")
        pairs[0][0].buf = f"CONNECTED {pairs[0][1].id}\n".encode() + pairs[0][0].buf
    os.kill(old, signal.SIGKILL)
    for a, b in pairs:
        a.expect(f"CONNECTED {b.id}")
        b.expect(f"CONNECTED {a.id}")
    for a, b in pairs:
        a.send(f"hello {b.id}")
        b.send(f"hello {a.id}")
    for a, b in pairs:
        b.expect(f"MSG hello {b.id}")
        a.expect(f"MSG hello {a.id}")
    wait_for(lambda: new_pid(server, "matchmaker", old), what="a new matchmaker")
    probe = server.client()
    probe.send("GET")
    busy = " ".join(f"{c.id}=BUSY" for c in sorted(clients, key=lambda c: c.id))
    probe.expect(f"CLIENTS {busy} {probe.id}=FREE")


def holds(server, worker: int, client) -> bool:
    """Whether worker ``worker`` (1-based) still holds ``client``'s connection."""
    local = client.sock.getsockname()
    conns = psutil.Process(server.pid_of(f"worker {worker}")).net_connections("tcp")
    return any(c.raddr and (c.raddr.ip, c.raddr.port) == local for c in conns)


def test_a_client_in_flight_through_a_matchmaker_restart_keeps_its_id_and_its_session(server):
    """The dead matchmaker knew of the move, the new one does not: the client, taken in by
    its new worker, is known again by its id and its CONNECT is answered. Its new worker
    takes it in before saying hello, so a newcomer cannot be given its id meanwhile."""
    a, b = two_clients(server, "cross")
    src, dst = server.worker_of(a), server.worker_of(b)
    receiver = server.pid_of(f"worker {dst}")
    os.kill(receiver, signal.SIGSTOP)  # a's socket will wait in its inbox
    try:
        a.send(f"CONNECT {b.id}")  # a tie: the requester moves
        wait_for(lambda: not holds(server, src, a), what="a handed over")
        old = server.pid_of("matchmaker")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: new_pid(server, "matchmaker", old), what="a new matchmaker")
        newcomer = server.connect()  # registered once every worker said hello
    finally:
        os.kill(receiver, signal.SIGCONT)
    a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")
    assert server.worker_of(a) == server.worker_of(b) == dst
    a.send("made it")
    b.expect("MSG made it")
    newcomer.welcome()  # a's id was taken by the newcomer, and a got OUTAGE on landing
    assert newcomer.id not in (a.id, b.id)
    c = server.client()
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=BUSY {b.id}=BUSY {newcomer.id}=FREE {c.id}=FREE")


def test_a_client_that_outlives_the_worker_it_left_keeps_its_id_and_its_session(server):
    a, b = two_clients(server, "cross")
    src, dst = server.worker_of(a), server.worker_of(b)
    receiver = server.pid_of(f"worker {dst}")
    os.kill(receiver, signal.SIGSTOP)
    try:
        a.send(f"CONNECT {b.id}")
        wait_for(lambda: not holds(server, src, a), what="a handed over")
        old = server.pid_of(f"worker {src}")
        os.kill(old, signal.SIGKILL)  # the matchmaker frees a with the rest of its clients
        wait_for(lambda: new_pid(server, f"worker {src}", old), what="a new worker")
    finally:
        os.kill(receiver, signal.SIGCONT)
    a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")
    b.send("still you")
    a.expect("MSG still you")


def test_a_client_on_its_way_to_a_worker_that_dies_is_taken_in_by_its_replacement(server):
    a, b = two_clients(server, "cross")
    src, dst = server.worker_of(a), server.worker_of(b)
    old = server.pid_of(f"worker {dst}")
    os.kill(old, signal.SIGSTOP)
    a.send(f"CONNECT {b.id}")
    wait_for(lambda: not holds(server, src, a), what="a handed over")
    os.kill(old, signal.SIGKILL)  # b dies with it; a waits in the inbox the supervisor keeps
    b.expect_closed()
    a.expect(f"ERROR OFFLINE {b.id}")
    assert server.worker_of(a) == dst  # the new worker
    a.send("GET")
    a.expect(f"CLIENTS {a.id}=FREE")


def test_a_moved_client_refused_on_landing_gets_outage_and_its_lines_reach_no_one(
    start_server,
):
    """Regression (soak --chaos, seeds 1 and 9): a target on its way to its partner's
    worker lost its old worker, so the matchmaker freed it and gave its id to a newcomer.
    Taken in at last, it was refused with OUTAGE, but the GET it had sent meanwhile was
    answered to the newcomer, who saw CLIENTS for a line it never sent."""
    server = start_server("--worker-timeout", "60")  # no worker is killed for being stopped
    a, b, x3, p, x5 = (server.client() for _ in range(5))
    src, dst = server.worker_of(a), server.worker_of(b)
    assert [server.worker_of(c) for c in (x3, p, x5)] == [src, dst, src]
    matchmaker = server.pid_of("matchmaker")
    receiver = server.pid_of(f"worker {dst}")
    os.kill(matchmaker, signal.SIGSTOP)  # b's CONNECT waits in the queue
    try:
        b.send(f"CONNECT {a.id}")  # a's worker is the fuller one: a moves to b's
        p.quiet()  # b's worker has read the CONNECT, and passed it on, before this PING
        os.kill(receiver, signal.SIGSTOP)  # a's socket will wait in its inbox
    finally:
        os.kill(matchmaker, signal.SIGCONT)
    try:
        wait_for(lambda: not holds(server, src, a), what="a handed over")
        a.send("GET")  # read where a lands
        old = server.pid_of(f"worker {src}")
        os.kill(old, signal.SIGKILL)  # the matchmaker frees a with the rest of its clients
        new = wait_for(lambda: new_pid(server, f"worker {src}", old), what="a new worker")
        wait_for(lambda: serving(psutil.Process(new)), what="the new worker serving")
        passed_over = f"passing worker {dst} over"  # the newcomer goes to the new worker
        wait_for(lambda: passed_over in server.log(), what="the stopped worker passed over")
        heir = server.client()
        assert heir.id == a.id
    finally:
        os.kill(receiver, signal.SIGCONT)
    a.expect("OUTAGE")
    a.expect_closed()
    # its one drop line (README, "Drops"), with the id it had, from the worker it landed on
    port = a.sock.getsockname()[1]
    outage = f'drop reason=outage client={a.id} peer=127.0.0.1:{port} process="worker {dst}"'
    wait_for(lambda: outage in server.log(), what="the outage drop line")
    b.expect(f"ERROR OFFLINE {a.id}")
    heir.send("GET")
    heir.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE {p.id}=FREE")  # the first line it gets
    heir.quiet()  # and nothing else came
