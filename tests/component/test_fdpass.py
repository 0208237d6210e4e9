"""ipc.fdpass over a real SOCK_SEQPACKET pair: descriptors arrive working, none leak."""

from __future__ import annotations

import gc
import os
import resource
import socket
from contextlib import contextmanager

import pytest

from ipc import fdpass
from ipc.fdpass import LINE, Dropped, handoff_pair, recv_tagged, send_fd


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leak():
    gc.collect()  # sockets earlier tests left in garbage cycles close now, not mid-test
    before = open_fds()
    yield
    assert open_fds() == before


def taken(worker):
    """The descriptor of the next hand-over, which must be a protocol v1 one."""
    got = recv_tagged(worker)
    assert got is not None and got[1] == LINE
    return got[0]


@pytest.fixture
def channel(no_leak):
    acceptor, worker = handoff_pair()
    with acceptor, worker:
        yield acceptor, worker


def test_handoff_pair_is_unix_seqpacket(channel):
    for end in channel:
        assert end.family == socket.AF_UNIX
        assert end.type == socket.SOCK_SEQPACKET


def test_passed_socket_works_after_the_sender_closes_its_copy(channel):
    acceptor, worker = channel
    client, server_side = socket.socketpair()
    with client:
        send_fd(acceptor, server_side.fileno())
        server_side.close()  # the acceptor's copy; the worker's must still work
        fd = taken(worker)
        with socket.socket(fileno=fd) as received:
            client.sendall(b"ping\n")
            assert received.recv(16) == b"ping\n"
            received.sendall(b"pong\n")
            assert client.recv(16) == b"pong\n"
        assert client.recv(16) == b""  # the last copy closed: the client sees EOF


def test_received_fd_is_a_new_descriptor_for_the_same_socket(channel):
    acceptor, worker = channel
    a, b = socket.socketpair()
    with a, b:
        send_fd(acceptor, b.fileno())
        fd = taken(worker)
        try:
            assert fd != b.fileno()
            assert os.fstat(fd).st_ino == os.fstat(b.fileno()).st_ino
        finally:
            os.close(fd)


def test_received_fd_is_not_inheritable(channel):
    """recv_fds did not set CLOEXEC: client sockets would leak into any child of a worker."""
    acceptor, worker = channel
    a, b = socket.socketpair()
    with a, b:
        assert os.get_inheritable(b.fileno()) is False
        send_fd(acceptor, b.fileno())
        fd = taken(worker)
        try:
            assert os.get_inheritable(fd) is False
        finally:
            os.close(fd)


def test_several_fds_arrive_in_order(channel):
    acceptor, worker = channel
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        for _, far in pairs:
            send_fd(acceptor, far.fileno())
        for near, far in pairs:
            fd = taken(worker)
            with socket.socket(fileno=fd) as received:
                assert os.fstat(received.fileno()).st_ino == os.fstat(far.fileno()).st_ino
                near.sendall(b"x")
                assert received.recv(1) == b"x"
    finally:
        for near, far in pairs:
            near.close()
            far.close()


def test_recv_tagged_returns_none_when_the_other_end_is_closed(no_leak):
    acceptor, worker = handoff_pair()
    with worker:
        acceptor.close()
        assert recv_tagged(worker) is None


def test_a_message_without_fd_is_dropped_not_taken_for_the_end(channel):
    acceptor, worker = channel
    acceptor.send(b"F")
    with pytest.raises(Dropped):
        recv_tagged(worker)
    a, b = socket.socketpair()
    with a, b:
        send_fd(acceptor, b.fileno())
        fd = taken(worker)  # the channel still works
        os.close(fd)


@contextmanager
def free_descriptors(count: int):
    """Room for exactly ``count`` more descriptors in this process (0: ``no_free_descriptor``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = [os.dup(0) for _ in range(count)]  # descriptors are allocated lowest first
    lowest_free = os.dup(0)
    os.close(lowest_free)
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def no_free_descriptor():
    """This process's soft RLIMIT_NOFILE set so that no new descriptor can be opened."""
    return free_descriptors(0)


def test_a_hand_over_truncated_at_the_descriptor_limit_is_dropped_and_the_channel_lives(
    channel,
):
    """A worker at its limit got the hand-over without its descriptor (MSG_CTRUNC) and took
    that for a closed channel, so it never read another one."""
    acceptor, worker = channel
    client, far = socket.socketpair()
    with client:
        send_fd(acceptor, far.fileno(), fdpass.LEGACY)
        far.close()  # the acceptor's copy: the kernel held the only other one
        with no_free_descriptor(), pytest.raises(Dropped, match="descriptor limit"):
            recv_tagged(worker)
        assert client.recv(16) == b""  # the socket that could not be installed is closed
    a, b = socket.socketpair()
    with a, b:
        send_fd(acceptor, b.fileno(), fdpass.LEGACY)
        got = recv_tagged(worker)
        assert got is not None and got[1] == fdpass.LEGACY
        os.close(got[0])


def test_nonblocking_recv_with_nothing_waiting_raises(channel):
    _, worker = channel
    worker.setblocking(False)
    with pytest.raises(BlockingIOError):
        recv_tagged(worker)


def test_nonblocking_recv_gets_a_waiting_fd(channel):
    acceptor, worker = channel
    worker.setblocking(False)
    a, b = socket.socketpair()
    with a, b:
        send_fd(acceptor, b.fileno())
        fd = taken(worker)
        os.close(fd)
    with pytest.raises(BlockingIOError):
        recv_tagged(worker)


def test_extra_fds_in_one_message_are_closed(channel):
    acceptor, worker = channel
    a, b = socket.socketpair()
    with a, b:
        socket.send_fds(acceptor, [b"F"], [a.fileno(), b.fileno()])
        fd = taken(worker)
        assert os.fstat(fd).st_ino == os.fstat(a.fileno()).st_ino
        os.close(fd)
    # the no_leak fixture checks that the second descriptor was closed


def test_a_full_channel_refuses_at_once_without_wait(channel):
    """The acceptor must never block on one worker's channel (a stopped worker never reads)."""
    acceptor, worker = channel
    worker.setblocking(False)
    a, b = socket.socketpair()
    with a, b:
        sent = 0
        with pytest.raises(BlockingIOError):
            while sent < 100_000:
                send_fd(acceptor, b.fileno(), wait=False)
                sent += 1
        assert sent > 0
        for _ in range(sent):  # every one that was sent arrives, and none more
            fd = taken(worker)
            os.close(fd)
        with pytest.raises(BlockingIOError):
            recv_tagged(worker)


def test_send_to_a_closed_channel_raises_and_leaks_nothing(no_leak):
    acceptor, worker = handoff_pair()
    worker.close()
    a, b = socket.socketpair()
    with acceptor, a, b, pytest.raises(OSError):
        send_fd(acceptor, b.fileno())


def test_several_descriptors_arrive_in_one_message_with_their_tag(channel):
    sender, receiver = channel
    a, b = socket.socketpair()
    with a, b:
        fdpass.send_fds(sender, [a.fileno(), b.fileno()], b"\x00\x00\x00\x07", wait=False)
        got = fdpass.recv_fds(receiver, 2, 4)
        assert got is not None
        fds, tag = got
        assert tag == b"\x00\x00\x00\x07"
        for fd, original in zip(fds, (a, b), strict=True):
            assert os.fstat(fd).st_ino == os.fstat(original.fileno()).st_ino
            assert not os.get_inheritable(fd)
            os.close(fd)


def test_a_message_short_of_descriptors_is_dropped_and_what_came_is_closed(channel):
    sender, receiver = channel
    a, b = socket.socketpair()
    with a, b:
        fdpass.send_fds(sender, [a.fileno()], b"\x00\x00\x00\x01")
        with pytest.raises(Dropped, match="1 of 2 descriptors"):
            fdpass.recv_fds(receiver, 2, 4)
    # the no_leak fixture checks that the one descriptor that came was closed
    sender.close()
    assert fdpass.recv_fds(receiver, 2, 4) is None


# ---- a burst's hand-overs in one message ---------------------------------------------


def test_a_burst_goes_in_one_message_with_its_tag_family_and_count(channel):
    acceptor, worker = channel
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        fdpass.send_handoffs(acceptor, [far.fileno() for _, far in pairs], fdpass.LEGACY, 10)
        worker.setblocking(False)
        got = fdpass.recv_handoffs(worker)
        assert got is not None
        assert (got.tag, got.family, got.lost, len(got.fds)) == (fdpass.LEGACY, 10, 0, 5)
        for fd, (_, far) in zip(got.fds, pairs, strict=True):
            assert os.path.samestat(os.fstat(fd), os.fstat(far.fileno()))
            assert not os.get_inheritable(fd)  # close-on-exec as it arrived
            os.close(fd)
        with pytest.raises(BlockingIOError):  # it was one message
            fdpass.recv_handoffs(worker)
    finally:
        for near, far in pairs:
            near.close()
            far.close()


def test_a_single_hand_over_reads_as_a_burst_of_one_of_no_said_family(channel):
    acceptor, worker = channel
    a, b = socket.socketpair()
    with a, b:
        send_fd(acceptor, b.fileno(), fdpass.TLS)
        got = fdpass.recv_handoffs(worker)
        assert got is not None
        assert (got.tag, got.family, got.lost, len(got.fds)) == (fdpass.TLS, 0, 0, 1)
        os.close(got.fds[0])
        acceptor.send(b"F")  # a hand-over without its descriptor
        assert fdpass.recv_handoffs(worker) == fdpass.Handed([], LINE, 0, 1)
    acceptor.close()
    assert fdpass.recv_handoffs(worker) is None


def test_at_the_descriptor_limit_mid_burst_what_fits_comes_and_the_rest_is_closed(channel):
    """The kernel installs what it can (MSG_CTRUNC) and closes the rest: those clients
    see their connection end, and the count says how many were lost."""
    acceptor, worker = channel
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        fdpass.send_handoffs(acceptor, [far.fileno() for _, far in pairs], LINE, 1)
        for _, far in pairs:
            far.close()  # the acceptor's copies: the message holds the only others
        with free_descriptors(2):
            got = fdpass.recv_handoffs(worker)
        assert got is not None
        assert (len(got.fds), got.lost) == (2, 3)
        for fd in got.fds:
            os.close(fd)
        for near, _ in pairs:
            assert near.recv(1) == b""  # installed and closed here, or closed by the kernel
        b, c = socket.socketpair()
        with b, c:  # the channel lives
            fdpass.send_handoffs(acceptor, [b.fileno()], LINE, 1)
            got = fdpass.recv_handoffs(worker)
            assert got is not None and len(got.fds) == 1
            os.close(got.fds[0])
    finally:
        for near, far in pairs:
            near.close()
            far.close()


@pytest.mark.parametrize("count", [0, fdpass.MAX_HANDOFF_FDS + 1])
def test_a_burst_is_one_to_the_most_a_message_carries(channel, count):
    acceptor, _ = channel
    with pytest.raises(ValueError):
        fdpass.send_handoffs(acceptor, [0] * count, LINE, 1)


# ---- moving clients between workers ---------------------------------------------------


@pytest.fixture
def move_channel(no_leak):
    inbox, outbox = fdpass.move_pair()
    inbox.setblocking(False)
    outbox.setblocking(False)
    yield inbox, outbox
    inbox.close()
    outbox.close()


def test_a_move_carries_its_payload_and_sockets(move_channel):
    inbox, outbox = move_channel
    pairs = [socket.socketpair() for _ in range(3)]
    fdpass.send_move(outbox, b"states", [a.fileno() for a, _ in pairs])
    payload, fds = fdpass.recv_move(inbox)
    assert (payload, len(fds)) == (b"states", 3)
    for fd, (a, b) in zip(fds, pairs, strict=True):
        assert not os.get_inheritable(fd)
        a.close()
        with socket.socket(fileno=fd) as moved:
            moved.sendall(b"still connected")
            assert b.recv(100) == b"still connected"
        b.close()


def test_a_full_inbox_refuses_and_the_sender_keeps_its_socket(move_channel):
    """A datagram inbox queues only a few datagrams: the rest are refused at once."""
    inbox, outbox = move_channel
    a, b = socket.socketpair()
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            fdpass.send_move(outbox, b"x", [a.fileno()])
    a.sendall(b"mine")
    assert b.recv(10) == b"mine"
    while True:
        try:
            _payload, fds = fdpass.recv_move(inbox)
        except BlockingIOError:
            break
        for fd in fds:
            os.close(fd)
    a.close()
    b.close()


def test_too_much_at_once_is_refused_before_sending(move_channel):
    _inbox, outbox = move_channel
    with pytest.raises(OSError):
        fdpass.send_move(outbox, b"x" * (fdpass.MAX_MOVE + 1), [0])
    with pytest.raises(OSError):
        fdpass.send_move(outbox, b"x", [0] * (fdpass.MAX_MOVE_FDS + 1))


def test_nothing_waiting_raises_blocking(move_channel):
    inbox, _outbox = move_channel
    with pytest.raises(BlockingIOError):
        fdpass.recv_move(inbox)
