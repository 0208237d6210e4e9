"""ipc.channel: one put per flush, pieces a pipe writes whole, draining without blocking."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import select
import time

import pytest

from ipc.channel import CHUNK, Links, Receiver, Sender

CTX = multiprocessing.get_context("spawn")
WAIT = 10.0
PIPE_BUF = 4096


def frames(q):
    """Every frame waiting in the queue's pipe: (its size on the wire, its piece)."""
    reader = q._reader
    os.set_blocking(reader.fileno(), False)
    got = []
    while True:
        try:
            piece = reader.recv_bytes()
        except BlockingIOError:
            return got
        got.append((len(piece) + 4, piece))


def decode(pieces):
    assert all(p[:1] == b"\x00" for p in pieces[:-1]) and pieces[-1][:1] == b"\x01"
    return pickle.loads(b"".join(p[1:] for p in pieces))


@pytest.fixture
def make_queue():
    made = []

    def make():
        q = CTX.Queue()
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


def readable(fd, timeout):
    return select.select([fd], [], [], timeout)[0] == [fd]


def drain_until(receiver, count):
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        assert readable(receiver.fileno(), deadline - time.monotonic()), "nothing arrived"
        got += receiver.drain()
    return got


def test_sends_are_batched_into_one_frame(make_queue):
    q = make_queue()
    sender = Sender(q)
    for message in ("a", "b", "c"):
        sender.send(message)
    assert frames(q) == []  # nothing leaves before flush
    sender.flush()
    (frame,) = frames(q)
    assert decode([frame[1]]) == ["a", "b", "c"]


def test_a_large_batch_goes_in_frames_a_pipe_writes_whole(make_queue):
    q = make_queue()
    sender = Sender(q)
    batch = [("line", f"{i:04d}" + "x" * 1000, i) for i in range(50)]
    for message in batch:
        sender.send(message)
    sender.flush()
    got = frames(q)
    assert len(got) > 10
    assert max(size for size, _ in got) <= PIPE_BUF
    assert decode([piece for _, piece in got]) == batch


def test_flush_with_nothing_pending_writes_nothing(make_queue):
    q = make_queue()
    Sender(q).flush()
    assert frames(q) == []


class FakeLoop:
    def __init__(self):
        self.soon, self.writers = [], {}

    def call_soon(self, callback):
        self.soon.append(callback)

    def add_writer(self, fd, callback):
        self.writers[fd] = callback

    def remove_writer(self, fd):
        self.writers.pop(fd, None)


def test_with_a_loop_a_flush_is_scheduled_once_per_batch(make_queue):
    q = make_queue()
    loop = FakeLoop()
    sender = Sender(q, loop)
    sender.send(1)
    sender.send(2)
    assert loop.soon == [sender.flush]
    loop.soon[0]()
    sender.send(3)
    assert len(loop.soon) == 2
    assert [decode([piece]) for _, piece in frames(q)] == [[1, 2]]


def test_a_full_pipe_never_blocks_and_the_rest_follows_in_order(make_queue):
    """The reader is busy: frames wait in the sender, in order, until the loop says go."""
    q = make_queue()
    loop = FakeLoop()
    sender = Sender(q, loop)
    batches = [[i, "p" * 3000] for i in range(100)]  # 300 kB: more than a pipe holds
    for batch in batches:
        sender._pending = list(batch)
        sender.flush()
    assert sender.blocked
    assert loop.writers == {sender.fileno(): sender.resume}
    receiver = Receiver(q)
    got = []
    while sender.blocked:
        got += receiver.drain()
        loop.writers[sender.fileno()]()
    got += receiver.drain()
    assert got == batches
    assert loop.writers == {}


def test_close_writes_what_it_can_and_abandon_drops_the_rest(make_queue):
    q = make_queue()
    sender = Sender(q)
    sender.send("last")
    sender.close()
    assert [decode([piece]) for _, piece in frames(q)] == [["last"]]
    sender.send("never")
    sender.abandon()
    sender.flush()
    assert frames(q) == []


def test_batches_cross_a_real_queue_in_order(make_queue):
    q = make_queue()
    sender, receiver = Sender(q), Receiver(q)
    assert receiver.drain() == []
    sender.send("small")
    sender.flush()
    big = [f"{i}" + "y" * 3000 for i in range(20)]
    for message in big:
        sender.send(message)
    sender.flush()
    assert drain_until(receiver, 2) == [["small"], big]
    assert receiver.drain() == []


def test_half_a_batch_waits_and_never_blocks(make_queue):
    """A writer killed between two frames leaves a partial batch: drain must not hang on it."""
    q = make_queue()
    receiver = Receiver(q)
    data = pickle.dumps(["z" * 5000])
    q._writer.send_bytes(b"\x00" + data[:CHUNK])
    assert receiver.drain() == []
    assert receiver._parts
    assert receiver.drain() == []


def test_links_move_a_slot_to_fresh_queues_until_the_pool_is_used():
    links = Links(CTX, workers=2, pool=3)
    try:
        first = links.link(1)
        assert links.advance(1)
        assert links.link(1) is not first
        assert links.link(0) is links.pools[0][0]
        assert links.advance(1)
        assert not links.advance(1)
        assert links.current[1] == 2
    finally:
        for pool in links.pools:
            for link in pool:
                for q in link:
                    q.close()
                    q.join_thread()


def test_a_batch_that_cannot_be_packed_does_not_stop_the_sender(make_queue):
    q = make_queue()
    loop = FakeLoop()

    def pack(batch):
        if "bad" in batch:
            raise KeyError("bad")
        return batch

    sender = Sender(q, loop, pack)
    sender.send("bad")
    with pytest.raises(KeyError):
        loop.soon.pop()()
    sender.send("good")
    assert len(loop.soon) == 1  # a flush is scheduled again
    loop.soon.pop()()
    assert [decode([piece]) for _, piece in frames(q)] == [["good"]]
