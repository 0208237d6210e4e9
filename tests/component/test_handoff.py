"""workers.handoff over a real hand-off channel: truncated hand-overs are read past."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from ipc.fdpass import LEGACY, LINE, TLS, handoff_pair, send_fd, send_handoffs
from tests.component.test_fdpass import free_descriptors, no_free_descriptor
from wire.dialects import LegacyDialect, LineDialect
from workers.handoff import BATCH, Handoffs


class Worker:
    """A worker's side: what it adopted and how many hand-overs it counted."""

    def __init__(self, channel: socket.socket) -> None:
        self.adopted: list[tuple[socket.socket, object]] = []
        self.tls: list[bool] = []
        self.counted = 0
        self.handoffs = Handoffs(channel, self.adopt, self.count)

    def adopt(self, sock: socket.socket, dialect: object, tls: bool, web: bool = False) -> None:
        self.adopted.append((sock, dialect))
        self.tls.append(tls)

    def count(self) -> None:
        self.counted += 1

    def close(self) -> None:
        for sock, _ in self.adopted:
            sock.close()


@pytest.fixture
def channel():
    acceptor, worker_end = handoff_pair()
    worker = Worker(worker_end)
    yield acceptor, worker
    worker.close()
    acceptor.close()
    worker_end.close()


def test_sockets_are_adopted_in_their_port_dialect(channel):
    acceptor, worker = channel
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        send_fd(acceptor, a.fileno())
        send_fd(acceptor, b.fileno(), LEGACY)
        send_fd(acceptor, c.fileno(), TLS)
        assert worker.handoffs.read() is True
    assert [d for _, d in worker.adopted] == [LineDialect, LegacyDialect, LineDialect]
    assert worker.tls == [False, False, True]  # protocol v1, over TLS
    assert worker.counted == 3


def test_a_truncated_hand_over_is_counted_logged_and_read_past(channel, caplog):
    """At its descriptor limit a worker stopped reading hand-overs for good."""
    acceptor, worker = channel
    lost, lost_far = socket.socketpair()
    kept, kept_far = socket.socketpair()
    with lost, kept, kept_far:
        send_fd(acceptor, lost_far.fileno())
        lost_far.close()
        with no_free_descriptor():
            assert worker.handoffs.read() is True
        assert lost.recv(1) == b""  # the kernel closed what it could not install
        send_fd(acceptor, kept_far.fileno())
        assert worker.handoffs.read() is True
        assert worker.counted == 2  # the acceptor's count of in-flight hand-overs stays right
        [(sock, _)] = worker.adopted
        assert os.path.samestat(os.fstat(sock.fileno()), os.fstat(kept_far.fileno()))
    assert "without its descriptor" in caplog.text


def test_a_flood_of_dropped_hand_overs_logs_one_line(channel, caplog):
    acceptor, worker = channel
    for _ in range(100):
        acceptor.send(b"F")  # a hand-over with no descriptor
    with caplog.at_level(logging.WARNING):
        assert worker.handoffs.read() is True
    assert worker.counted == 100
    assert caplog.text.count("without its descriptor") == 1


def test_a_burst_is_taken_in_batches_so_the_loop_runs_in_between(channel):
    acceptor, worker = channel
    a, b = socket.socketpair()
    with a, b:
        worker.handoffs.channel.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        acceptor.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for _ in range(BATCH + 10):
            send_fd(acceptor, a.fileno())
        assert worker.handoffs.read() is True
        assert len(worker.adopted) == BATCH
        assert worker.handoffs.read() is True
        assert len(worker.adopted) == BATCH + 10


def test_the_end_of_the_channel_stops_the_reading(channel):
    acceptor, worker = channel
    acceptor.close()
    assert worker.handoffs.read() is False


def test_a_burst_in_one_message_is_adopted_whole_with_its_family(channel):
    acceptor, worker = channel
    listener = socket.create_server(("127.0.0.1", 0))
    clients = [socket.create_connection(listener.getsockname()) for _ in range(4)]
    accepted = [listener.accept()[0] for _ in clients]
    try:
        fds = [conn.fileno() for conn in accepted]
        send_handoffs(acceptor, fds, LEGACY, socket.AF_INET)
        assert worker.handoffs.read() is True
        assert worker.counted == 4
        assert [d for _, d in worker.adopted] == [LegacyDialect] * 4
        for (sock, _), conn in zip(worker.adopted, accepted, strict=True):
            assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert type(sock.family) is int and type(sock.type) is int  # no enum made per read
            assert sock.getpeername() == conn.getpeername()  # the object reads its address
    finally:
        for sock in [listener, *clients, *accepted]:
            sock.close()


def test_a_burst_cut_at_the_descriptor_limit_serves_what_came_and_counts_the_rest(channel, caplog):
    acceptor, worker = channel
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        send_handoffs(acceptor, [far.fileno() for _, far in pairs], LINE, socket.AF_UNIX)
        for _, far in pairs:
            far.close()
        with free_descriptors(2):
            assert worker.handoffs.read() is True
        assert len(worker.adopted) == 2
        assert worker.counted == 5  # the acceptor's count of in-flight hand-overs stays right
        for near, _ in pairs[2:]:
            assert near.recv(1) == b""  # closed by the kernel: the client sees the end
    finally:
        for near, far in pairs:
            near.close()
            far.close()
    assert "without its descriptor" in caplog.text


def test_a_failed_adoption_mid_burst_closes_and_counts_the_rest(channel):
    acceptor, worker = channel
    pairs = [socket.socketpair() for _ in range(4)]

    def adopt(sock: socket.socket, dialect: object, tls: bool, web: bool = False) -> None:
        worker.adopted.append((sock, dialect))
        if len(worker.adopted) == 2:
            raise RuntimeError("a bug in adopt")

    worker.handoffs.adopt = adopt
    try:
        send_handoffs(acceptor, [far.fileno() for _, far in pairs], LINE, socket.AF_UNIX)
        for _, far in pairs:
            far.close()
        with pytest.raises(RuntimeError):
            worker.handoffs.read()
        assert worker.counted == 4
        for near, _ in pairs[2:]:
            assert near.recv(1) == b""  # not leaked: closed, so the client sees the end
        assert worker.handoffs.read() is True  # and the channel reads on
    finally:
        for near, far in pairs:
            near.close()
            far.close()
