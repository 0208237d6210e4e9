"""ipc.channel: one frame per flush, frames a pipe writes whole, draining without blocking,
and links that outlive neither end."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import select
import time
from multiprocessing.connection import wait

import pytest

from ipc.channel import CHUNK, LAST, MORE, Receiver, Sender, link, recv_ends, send_ends
from ipc.fdpass import handoff_pair

CTX = multiprocessing.get_context("spawn")
WAIT = 10.0


def frames(conn):
    """Every frame waiting in the pipe ``conn`` reads: (its size on the wire, its piece)."""
    os.set_blocking(conn.fileno(), False)
    got = []
    while True:
        try:
            piece = conn.recv_bytes()
        except (BlockingIOError, EOFError):
            return got
        got.append((len(piece) + 4, piece))


def decode(pieces):
    """The batch in ``pieces``: one whole pickle, or marked pieces of one."""
    if len(pieces) == 1 and pieces[0][:1] == pickle.PROTO:
        return pickle.loads(pieces[0])
    assert all(p[:1] == MORE for p in pieces[:-1]) and pieces[-1][:1] == LAST
    return pickle.loads(b"".join(p[1:] for p in pieces))


@pytest.fixture
def pipe():
    """(writing end, reading end) of the worker-to-matchmaker pipe of a fresh link."""
    worker, matchmaker = link()
    yield worker.outbox, matchmaker.inbox
    worker.close()
    matchmaker.close()


def readable(fd, timeout):
    return select.select([fd], [], [], timeout)[0] == [fd]


def drain_until(receiver, count):
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        assert readable(receiver.fileno(), deadline - time.monotonic()), "nothing arrived"
        got += receiver.drain()
    return got


def test_sends_are_batched_into_one_frame(pipe):
    out, into = pipe
    sender = Sender(out)
    for message in ("a", "b", "c"):
        sender.send(message)
    assert frames(into) == []  # nothing leaves before flush
    sender.flush()
    (frame,) = frames(into)
    assert decode([frame[1]]) == ["a", "b", "c"]


def test_a_large_batch_goes_in_frames_a_pipe_writes_whole(pipe):
    out, into = pipe
    sender = Sender(out)
    batch = [("line", f"{i:04d}" + "x" * 1000, i) for i in range(50)]
    for message in batch:
        sender.send(message)
    sender.flush()
    got = frames(into)
    assert len(got) > 10
    assert max(size for size, _ in got) <= select.PIPE_BUF
    assert decode([piece for _, piece in got]) == batch


def test_flush_with_nothing_pending_writes_nothing(pipe):
    out, into = pipe
    Sender(out).flush()
    assert frames(into) == []


class FakeLoop:
    def __init__(self):
        self.soon, self.writers = [], {}

    def call_soon(self, callback):
        self.soon.append(callback)

    def add_writer(self, fd, callback):
        self.writers[fd] = callback

    def remove_writer(self, fd):
        self.writers.pop(fd, None)


def test_with_a_loop_a_flush_is_scheduled_once_per_batch(pipe):
    out, into = pipe
    loop = FakeLoop()
    sender = Sender(out, loop)
    sender.send(1)
    sender.send(2)
    assert loop.soon == [sender.flush]
    loop.soon[0]()
    sender.send(3)
    assert len(loop.soon) == 2
    assert [decode([piece]) for _, piece in frames(into)] == [[1, 2]]


def test_a_full_pipe_never_blocks_and_the_rest_follows_in_order(pipe):
    """The reader is busy: frames wait in the sender, in order, until the loop says go."""
    out, into = pipe
    loop = FakeLoop()
    sender = Sender(out, loop)
    batches = [[i, "p" * 3000] for i in range(100)]  # 300 kB: more than a pipe holds
    for batch in batches:
        for message in batch:
            sender.send(message)
        sender.flush()
    assert sender.blocked
    assert loop.writers == {sender.fileno(): sender.resume}
    receiver = Receiver(into)
    got = []
    while sender.blocked:
        got += receiver.drain()
        loop.writers[sender.fileno()]()
    got += receiver.drain()
    assert got == batches
    assert loop.writers == {}


def test_close_writes_what_it_can_and_abandon_drops_the_rest(pipe):
    out, into = pipe
    sender = Sender(out)
    sender.send("last")
    sender.close()
    assert [decode([piece]) for _, piece in frames(into)] == [["last"]]
    assert out.closed
    sender.send("never")
    sender.abandon()
    sender.flush()
    assert frames(into) == []


def test_batches_cross_a_real_pipe_in_order(pipe):
    out, into = pipe
    sender, receiver = Sender(out), Receiver(into)
    assert receiver.drain() == []
    sender.send("small")
    sender.flush()
    big = [f"{i}" + "y" * 3000 for i in range(20)]
    for message in big:
        sender.send(message)
    sender.flush()
    assert drain_until(receiver, 2) == [["small"], big]
    assert receiver.drain() == []


def test_half_a_batch_waits_and_never_blocks(pipe):
    """A writer killed between two frames leaves a partial batch: drain must not hang on it."""
    out, into = pipe
    receiver = Receiver(into)
    data = pickle.dumps(["z" * 5000])
    out.send_bytes(MORE + data[:CHUNK])
    assert receiver.drain() == []
    assert receiver.drain() == []
    assert not receiver.closed


def test_a_batch_that_cannot_be_packed_does_not_stop_the_sender(pipe):
    out, into = pipe
    loop = FakeLoop()

    def pack(batch):
        if "bad" in batch:
            raise KeyError("bad")
        return batch

    sender = Sender(out, loop, pack)
    sender.send("bad")
    with pytest.raises(KeyError):
        loop.soon.pop()()
    sender.send("good")
    assert len(loop.soon) == 1  # a flush is scheduled again
    loop.soon.pop()()
    assert [decode([piece]) for _, piece in frames(into)] == [["good"]]


def test_when_the_reader_has_died_what_waits_is_dropped(pipe):
    """Its replacement is told everything again on a fresh link; nothing may block or raise."""
    out, into = pipe
    loop = FakeLoop()
    sender = Sender(out, loop)
    for i in range(100):
        sender.send([i, "p" * 3000])
        sender.flush()
    assert sender.blocked and loop.writers
    into.close()  # the last reading end: the reader is gone
    loop.writers[sender.fileno()]()
    assert not sender.blocked and loop.writers == {}
    sender.send("after")
    sender.flush()  # nothing happens, and nothing is kept
    assert not sender.blocked


def test_when_the_writer_has_died_the_receiver_takes_what_came_whole_and_stops(pipe):
    out, into = pipe
    sender, receiver = Sender(out), Receiver(into)
    sender.send("last words")
    sender.flush()
    out.send_bytes(MORE + b"half a batch")
    out.close()  # the last writing end: the writer is gone
    assert readable(receiver.fileno(), 0)
    assert receiver.drain() == [["last words"]]
    assert receiver.closed
    assert receiver.drain() == []  # and the caller stops watching it


def echo(ends, control):
    """Child: send back every batch, on a fresh link when one arrives, until ``["stop"]``."""
    receiver, sender = Receiver(ends.inbox), Sender(ends.outbox)
    while True:
        ready = wait([receiver.fileno(), control], WAIT)
        assert ready, "nothing arrived"
        if control in ready:
            _slot, fresh = recv_ends(control)
            receiver.close()
            sender.abandon()
            receiver, sender = Receiver(fresh.inbox), Sender(fresh.outbox)
            continue
        for batch in receiver.drain():
            if batch == ["stop"]:
                sender.close()
                return
            for message in batch:
                sender.send(message)
            sender.flush()


def round_trip(sender, receiver, sent):
    for batch in sent:
        for message in batch:
            sender.send(message)
        sender.flush()
    assert drain_until(receiver, len(sent)) == sent


def test_batches_cross_to_a_spawned_process_and_back_and_on_a_fresh_link():
    """Ends go to a process when it is spawned, and to a running one by fd passing."""
    mine, theirs = link()
    control, child_control = handoff_pair()
    child = CTX.Process(target=echo, args=(theirs, child_control))
    child.start()
    theirs.close()
    child_control.close()
    try:
        sender, receiver = Sender(mine.outbox), Receiver(mine.inbox)
        round_trip(sender, receiver, [["a", "b"], ["x" * 20_000], [("tuple", 1)]])
        sender.abandon()
        receiver.close()

        mine, theirs = link()
        send_ends(control, 3, theirs)
        theirs.close()
        sender, receiver = Sender(mine.outbox), Receiver(mine.inbox)
        round_trip(sender, receiver, [["on the fresh link"], ["y" * 9000]])
        sender.send("stop")
        sender.flush()
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        control.close()
        mine.close()


@pytest.fixture
def control():
    """A control socket (the supervisor's end, a child's) and a fresh link to pass over it."""
    ours, theirs = handoff_pair()
    worker, matchmaker = link()
    with ours, theirs:
        yield ours, theirs, worker, matchmaker
    worker.close()
    matchmaker.close()


def test_fresh_ends_arrive_with_their_slot_and_work(control):
    ours, theirs, worker, matchmaker = control
    send_ends(ours, 7, matchmaker)
    matchmaker.close()  # the sender's copies; the receiver's must still work
    got = recv_ends(theirs)
    assert got is not None
    slot, ends = got
    assert slot == 7
    round_trip(Sender(worker.outbox), Receiver(ends.inbox), [["up"]])
    round_trip(Sender(ends.outbox), Receiver(worker.inbox), [["down"]])
    ends.close()
    ours.close()
    assert recv_ends(theirs) is None  # the supervisor has gone


def test_a_full_control_socket_refuses_at_once(control):
    ours, theirs, _worker, matchmaker = control
    with pytest.raises(BlockingIOError):
        for _ in range(100_000):
            send_ends(ours, 0, matchmaker)
    theirs.setblocking(False)
    while True:  # what was sent arrives, and is closed here
        try:
            got = recv_ends(theirs)
        except BlockingIOError:
            break
        assert got is not None
        got[1].close()
