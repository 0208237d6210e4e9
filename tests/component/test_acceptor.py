"""The acceptor's hand-over over real channels: a full one is skipped, never waited on."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import random
import select
import socket
import sys
import threading
import time

import pytest

from ipc.fdpass import LEGACY, LINE, TLS, Handed, handoff_pair, recv_handoffs, recv_tagged, send_fd
from ipc.load import SILENT_AFTER, WorkerLoad
from matchmaker.acceptor import MAX_UNTAKEN, Intake, Placement
from tests.component.test_fdpass import no_free_descriptor
from wire import legacy

WORKERS = 3


class Server:
    """An acceptor's ends: a listener, a hand-off channel per worker, and the shared load."""

    def __init__(self, policy: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.pairs = [handoff_pair() for _ in range(WORKERS)]
        for _, worker_end in self.pairs:
            worker_end.setblocking(False)
        self.load = WorkerLoad(multiprocessing.get_context("spawn"), WORKERS)
        for i in range(WORKERS):
            self.load.up[i] = 1
            self.load.beat[i] = time.monotonic()
        self.intake = Intake([a for a, _ in self.pairs], Placement(policy, self.load))
        self.intake.hold = 0.05  # how long a client may wait for a full channel to make room
        self.clients: list[socket.socket] = []

    def connect(self, tag: bytes = LINE) -> socket.socket:
        """A client whose connection the acceptor has just taken (or refused)."""
        client = socket.create_connection(self.listener.getsockname(), timeout=5)
        self.clients.append(client)
        assert select.select([self.listener], [], [], 5)[0], "connection never queued"
        self.intake.accept(self.listener, tag)
        return client

    def fill(self, worker: int) -> int:
        """Hand worker ``worker`` sockets until its channel takes no more (it never reads)."""
        sent = 0
        while True:
            try:
                send_fd(self.pairs[worker][0], self.listener.fileno(), wait=False)
            except BlockingIOError:
                return sent
            sent += 1

    def drain(self, worker: int, count: int) -> None:
        """Read and close ``count`` hand-overs, as a worker that catches up."""
        for _ in range(count):
            got = recv_tagged(self.pairs[worker][1])
            assert got is not None
            os.close(got[0])

    def received(self, worker: int) -> list[tuple[int, bytes]]:
        got = []
        while True:
            try:
                one = recv_tagged(self.pairs[worker][1])
            except BlockingIOError:
                return got
            assert one is not None
            got.append(one)

    def close(self) -> None:
        for sock in [self.listener, *self.clients, *(end for p in self.pairs for end in p)]:
            sock.close()
        if self.intake.reserve.fd is not None:
            os.close(self.intake.reserve.fd)


@pytest.fixture(params=["least-loaded", "round-robin"])
def server(request):
    s = Server(request.param)
    yield s
    s.close()


def peer_of(fd: int, client: socket.socket) -> bool:
    """Whether ``fd`` is the server end of ``client``'s connection; closes ``fd``."""
    return peer(fd) == client.getsockname()


def peer(fd: int) -> tuple[str, int]:
    """The client address of a received server end; closes it."""
    with socket.socket(fileno=fd) as sock:
        return sock.getpeername()


def read_all(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(4096):
        data += chunk
    return data


def test_a_full_channel_is_skipped_and_the_next_worker_takes_the_client(server):
    """The acceptor blocked in sendmsg on a stopped worker's channel: no client got in."""
    server.fill(0)
    server.fill(1)
    client = server.connect()
    [(fd, tag)] = server.received(2)
    assert tag == LINE and peer_of(fd, client)
    assert server.intake.placement.handed[2] == 1


def test_when_every_channel_is_full_the_client_hears_full_and_is_closed(server):
    for worker in range(WORKERS):
        assert server.fill(worker) > 0
    client = server.connect()
    assert read_all(client) == b"ERROR FULL\n"
    assert server.intake.placement.handed == [0, 0, 0]


def test_a_refused_legacy_client_hears_full_in_its_dialect(server):
    for worker in range(WORKERS):
        server.fill(worker)
    client = server.connect(LEGACY)
    assert read_all(client) == legacy.record(legacy.ABORT)


def test_a_refused_tls_client_is_closed_without_a_plain_word(server):
    """Plain text would only break its handshake, which is a worker's to run."""
    for worker in range(WORKERS):
        server.fill(worker)
    client = server.connect(TLS)
    assert read_all(client) == b""


def test_a_worker_that_is_down_gets_no_client_while_another_beats(server):
    server.load.up[0] = 0
    first, second = server.connect(), server.connect()
    assert server.received(0) == []
    got = server.received(1) + server.received(2)
    assert all(peer_of(fd, c) for (fd, _), c in zip(got, (first, second), strict=True))
    server.fill(1)
    server.fill(2)
    refused = server.connect()  # its replacement may take a while to start
    assert read_all(refused) == b"ERROR FULL\n"
    assert server.received(0) == []


def test_out_of_descriptors_a_client_waits_in_the_backlog_and_is_served_after(server):
    client = socket.create_connection(server.listener.getsockname(), timeout=5)
    server.clients.append(client)
    assert select.select([server.listener], [], [], 5)[0]
    with no_free_descriptor():
        server.intake.accept(server.listener, LINE)  # backs off
    assert server.intake.short_since is not None
    server.intake.accept(server.listener, LINE)
    got = [fd for w in range(WORKERS) for fd, _ in server.received(w)]
    assert [peer_of(fd, client) for fd in got] == [True]
    assert server.intake.short_since is None


def test_out_of_descriptors_for_long_the_spare_one_refuses_the_client(server):
    """Left in the backlog while the acceptor retried, a client hung with no answer for
    as long as the shortage lasted; now the spare descriptor takes it to say FULL."""
    client = socket.create_connection(server.listener.getsockname(), timeout=5)
    server.clients.append(client)
    assert select.select([server.listener], [], [], 5)[0]
    server.intake.shed_after = 0.0
    with no_free_descriptor():
        server.intake.accept(server.listener, LINE)
        assert server.intake.reserve.fd is not None  # taken back for the next time
    assert read_all(client) == b"ERROR FULL\n"
    assert all(server.received(w) == [] for w in range(WORKERS))


def test_a_silent_worker_is_passed_over_while_another_beats(server, caplog):
    """A stopped worker's channel holds ~280 clients before it refuses: they would wait
    for its replacement. Once its beat is old, new clients go to the others only."""
    caplog.set_level(logging.INFO)
    server.load.beat[0] = time.monotonic() - 2 * SILENT_AFTER
    clients = [server.connect() for _ in range(4)]
    got = server.received(1) + server.received(2)
    assert sorted(peer(fd) for fd, _ in got) == sorted(c.getsockname() for c in clients)
    server.intake.placement.review()
    assert "passing worker 1 over: its event loop has been silent for 3.0s" in caplog.text
    server.fill(1)
    server.fill(2)
    refused = server.connect()  # not queued behind the silent worker
    assert read_all(refused) == b"ERROR FULL\n"
    assert server.received(0) == []
    server.load.beat[0] = time.monotonic()
    server.intake.placement.review()
    assert "worker 1 beats again" in caplog.text


def test_when_no_worker_beats_every_one_may_take_clients(server):
    """Workers still starting, or a machine too loaded for any beat: nobody is passed over."""
    for worker in range(WORKERS):
        server.load.beat[worker] = 0.0
    clients = [server.connect() for _ in range(WORKERS)]
    got = [peer(fd) for w in range(WORKERS) for fd, _ in server.received(w)]
    assert sorted(got) == sorted(c.getsockname() for c in clients)


def test_a_client_waits_for_a_full_channel_to_make_room(server):
    """A burst bigger than the channels is paced to the workers, not refused."""
    filled = [server.fill(worker) for worker in range(WORKERS)]
    server.intake.hold = 10.0
    reader = threading.Timer(0.1, server.drain, args=(1, filled[1]))  # worker 2 catches up
    reader.start()
    try:
        client = server.connect()
    finally:
        reader.join()
    [(fd, _)] = server.received(1)
    assert peer_of(fd, client)


def test_accept_says_whether_more_may_wait(server):
    """The acceptor takes a burst in batches (``serve``, ``ACCEPT_BATCH``): ``accept`` is
    True while it took a connection, False once none waits."""
    address = server.listener.getsockname()
    clients = [socket.create_connection(address, timeout=5) for _ in range(4)]
    server.clients.extend(clients)
    assert select.select([server.listener], [], [], 5)[0], "connections never queued"
    taken = 0
    while server.intake.accept(server.listener, LINE):
        taken += 1
        assert taken <= 4, "accept went on with nothing waiting"
        if taken < 4:  # the next may still be in the kernel's hands: wait for it
            select.select([server.listener], [], [], 5)
    assert taken == 4
    got = [fd for worker in range(WORKERS) for fd, _ in server.received(worker)]
    assert sorted(peer(fd) for fd in got) == sorted(c.getsockname() for c in clients)


# ---- a burst taken at once -------------------------------------------------------------


def messages(server: Server, worker: int) -> list[Handed]:
    """Every hand-off message waiting for ``worker``."""
    got = []
    while True:
        try:
            one = recv_handoffs(server.pairs[worker][1])
        except BlockingIOError:
            return got
        assert one is not None
        got.append(one)


def burst(server: Server, count: int) -> list[socket.socket]:
    """``count`` clients waiting in the listener's accept queue."""
    address = server.listener.getsockname()
    clients = [socket.create_connection(address, timeout=5) for _ in range(count)]
    server.clients.extend(clients)
    deadline = time.monotonic() + 5
    while waiting(server.listener) < count:  # the kernel's handshakes done
        assert time.monotonic() < deadline, "connections never queued"
        time.sleep(0.001)
    return clients


def waiting(listener: socket.socket) -> int:
    """The length of a listener's accept queue (Linux: ``tcpi_unacked`` of a listener)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[24:28], sys.byteorder)


def test_a_burst_goes_to_each_worker_in_one_message_in_turn(server):
    clients = burst(server, 7)
    server.intake.take(server.listener, LEGACY)
    got = {w: messages(server, w) for w in range(WORKERS)}
    assert [[len(m.fds) for m in got[w]] for w in range(WORKERS)] == [[3], [2], [2]]
    assert all(m.tag == LEGACY and m.family == socket.AF_INET for w in got for m in got[w])
    # in turn: clients 1, 4, 7 to worker 1, 2 and 5 to worker 2, 3 and 6 to worker 3
    peers = {w: [peer(fd) for m in got[w] for fd in m.fds] for w in range(WORKERS)}
    mine = [c.getsockname() for c in clients]
    assert peers == {0: mine[0::3], 1: mine[1::3], 2: mine[2::3]}
    assert server.intake.placement.handed == [3, 2, 2]
    assert server.intake.placement.order()[0] == 1  # the next turn follows the 7th client's


def test_a_full_channel_s_share_of_a_burst_goes_to_the_others_one_by_one(server):
    server.fill(0)
    clients = burst(server, 4)
    server.intake.take(server.listener, LINE)
    got = {w: [peer(fd) for m in messages(server, w) for fd in m.fds] for w in (1, 2)}
    assert sorted(got[1] + got[2]) == sorted(c.getsockname() for c in clients)
    assert server.intake.placement.handed[0] == 0
    assert server.intake.placement.handed[1] + server.intake.placement.handed[2] == 4


def test_a_worker_that_has_not_taken_its_connections_gets_no_more_batches(server):
    """Batches would let a channel that is not read hold some 18,000 connections, not
    the 280 single hand-overs it held before: past ``MAX_UNTAKEN`` they go one by one."""
    placement = server.intake.placement
    placement.handed[0] = MAX_UNTAKEN - 1  # the worker has taken none of them
    server.intake.placement.policy = "round-robin"  # so that the plan gives worker 1 a share
    clients = burst(server, 6)
    server.intake.take(server.listener, LINE)
    got = {w: messages(server, w) for w in range(WORKERS)}
    assert all(len(m.fds) == 1 and m.family == 0 for m in got[0])  # none in a batch
    batches = [[len(m.fds) for m in got[w] if m.family] for w in range(WORKERS)]
    assert batches == [[], [2], [2]]  # worker 1's two went one by one, wherever
    peers = sorted(peer(fd) for w in got for m in got[w] for fd in m.fds)
    assert peers == sorted(c.getsockname() for c in clients)
    assert sum(placement.handed) == MAX_UNTAKEN - 1 + 6


def test_a_burst_no_channel_takes_is_refused_full(server):
    for worker in range(WORKERS):
        server.fill(worker)
    clients = burst(server, 3)
    server.intake.take(server.listener, LINE)
    for client in clients:
        assert read_all(client) == b"ERROR FULL\n"
    assert server.intake.placement.handed == [0, 0, 0]


def test_take_stops_at_its_limit_and_says_more_may_wait(server):
    burst(server, 5)
    assert server.intake.take(server.listener, LINE, limit=3) is True
    assert server.intake.take(server.listener, LINE, limit=3) is False
    assert sum(server.intake.placement.handed) == 5


@pytest.mark.parametrize("policy", ["least-loaded", "round-robin"])
def test_a_plan_is_what_placing_one_by_one_would_choose(policy):
    """``plan`` reads the standings once; it must pick what ``order`` would, placing each."""
    rng = random.Random(7)
    ctx = multiprocessing.get_context("spawn")
    for _ in range(200):
        n = rng.randint(1, 6)
        load = WorkerLoad(ctx, n)
        now = time.monotonic()
        for i in range(n):
            load.up[i] = rng.random() < 0.8
            load.beat[i] = now - rng.choice([0.0, 0.0, SILENT_AFTER * 2])
            load.live[i] = rng.randint(0, 5)
        clock = itertools.repeat(now).__next__
        one, many = Placement(policy, load, clock), Placement(policy, load, clock)
        start = rng.randrange(n)
        one._next = many._next = start
        count = rng.randint(1, 20)
        expected = []
        for _ in range(count):
            worker = one.order()[0]
            expected.append(worker)
            one.placed(worker)
        assert many.plan(count) == expected
