"""ipc.channel: one put per flush, pieces a pipe writes whole, draining without blocking."""

from __future__ import annotations

import multiprocessing
import pickle
import select
import time

import pytest

from ipc.channel import CHUNK, Links, Receiver, Sender

CTX = multiprocessing.get_context("spawn")
WAIT = 10.0  # an upper bound for the queue's feeder thread; never slept
PIPE_BUF = 4096


class RecordingQueue:
    """Stands in for a queue where the number and size of ``put`` calls matter."""

    def __init__(self):
        self.items = []
        self.cancelled = False

    def put(self, item):
        self.items.append(item)

    def cancel_join_thread(self):
        self.cancelled = True


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
        q.join_thread()


def readable(fd, timeout):
    return select.select([fd], [], [], timeout)[0] == [fd]


def drain_until(receiver, count):
    """Batches from a real queue: its feeder thread writes them a moment after put()."""
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        assert readable(receiver.fileno(), deadline - time.monotonic()), "nothing arrived"
        got += receiver.drain()
    return got


def test_sends_are_batched_into_one_put():
    q = RecordingQueue()
    sender = Sender(q)
    for message in ("a", "b", "c"):
        sender.send(message)
    assert q.items == []  # nothing leaves before flush
    sender.flush()
    assert len(q.items) == 1
    assert decode(q.items) == ["a", "b", "c"]


def test_a_large_batch_goes_in_pieces_a_pipe_writes_whole():
    q = RecordingQueue()
    sender = Sender(q)
    batch = [("line", f"{i:04d}" + "x" * 1000, i) for i in range(50)]
    for message in batch:
        sender.send(message)
    sender.flush()
    assert len(q.items) > 10
    for piece in q.items:
        assert len(piece) <= CHUNK + 1
        # what the queue writes: its own pickle of the piece plus a 4-byte length
        assert len(pickle.dumps(piece)) + 4 <= PIPE_BUF
    assert decode(q.items) == batch


def test_flush_with_nothing_pending_puts_nothing():
    q = RecordingQueue()
    Sender(q).flush()
    assert q.items == []


def test_schedule_is_called_once_per_batch():
    q = RecordingQueue()
    scheduled = []
    sender = Sender(q, schedule=scheduled.append)
    sender.send(1)
    sender.send(2)
    assert scheduled == [sender.flush]
    scheduled[0]()
    sender.send(3)
    assert len(scheduled) == 2
    assert [decode([item]) for item in q.items] == [[1, 2]]


def test_close_flushes_and_cancels_the_join():
    q = RecordingQueue()
    sender = Sender(q)
    sender.send("last")
    sender.close()
    assert decode(q.items) == ["last"]
    assert q.cancelled


def test_abandon_drops_what_is_pending():
    q = RecordingQueue()
    sender = Sender(q)
    sender.send("never")
    sender.abandon()
    sender.flush()
    assert q.items == []
    assert q.cancelled


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
    """A writer killed between two pieces leaves a partial batch: drain must not hang on it."""
    q = make_queue()
    receiver = Receiver(q)
    data = pickle.dumps(["z" * 5000])
    q.put(b"\x00" + data[:CHUNK])
    deadline = time.monotonic() + WAIT
    while not receiver._parts:
        assert time.monotonic() < deadline
        assert receiver.drain() == []
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
