"""ipc.channel over real spawn-context queues: one put per flush, draining without blocking."""

from __future__ import annotations

import multiprocessing
import select

import pytest

from ipc.channel import Receiver, Sender

CTX = multiprocessing.get_context("spawn")
WAIT = 10.0  # an upper bound for the queue's feeder thread; never slept


class RecordingQueue:
    """Stands in for a queue where the number of ``put`` calls matters."""

    def __init__(self):
        self.items = []
        self.cancelled = False

    def put(self, item):
        self.items.append(item)

    def cancel_join_thread(self):
        self.cancelled = True


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


# ---- Sender ------------------------------------------------------------------------


def test_sends_are_batched_into_one_put():
    q = RecordingQueue()
    sender = Sender(q)
    for message in ("a", "b", "c"):
        sender.send(message)
    assert q.items == []  # nothing leaves before flush
    sender.flush()
    assert q.items == [["a", "b", "c"]]


def test_flush_with_nothing_pending_puts_nothing():
    q = RecordingQueue()
    sender = Sender(q)
    sender.flush()
    assert q.items == []
    sender.send(1)
    sender.flush()
    sender.flush()
    assert q.items == [[1]]


def test_each_flush_is_its_own_batch_and_is_not_touched_later():
    q = RecordingQueue()
    sender = Sender(q)
    sender.send(1)
    sender.flush()
    sender.send(2)
    sender.send(3)
    sender.flush()
    assert q.items == [[1], [2, 3]]
    assert q.items[0] is not q.items[1]  # the queue pickles later: a batch must not change


def test_tagged_batches():
    q = RecordingQueue()
    sender = Sender(q, tag=3)
    sender.send("x")
    sender.send("y")
    sender.flush()
    assert q.items == [(3, ["x", "y"])]


def test_tag_zero_is_still_a_tag():
    q = RecordingQueue()
    sender = Sender(q, tag=0)
    sender.send("x")
    sender.flush()
    assert q.items == [(0, ["x"])]


def test_schedule_is_called_once_per_batch():
    q = RecordingQueue()
    scheduled = []
    sender = Sender(q, schedule=scheduled.append)
    sender.send(1)
    sender.send(2)
    sender.send(3)
    assert len(scheduled) == 1
    scheduled[0]()  # the loop runs the callback at the end of the tick
    assert q.items == [[1, 2, 3]]
    sender.send(4)
    assert len(scheduled) == 2
    sender.send(5)
    assert len(scheduled) == 2
    scheduled[1]()
    assert q.items == [[1, 2, 3], [4, 5]]


def test_scheduled_flush_after_a_manual_flush_puts_nothing():
    q = RecordingQueue()
    scheduled = []
    sender = Sender(q, schedule=scheduled.append)
    sender.send(1)
    sender.flush()
    scheduled[0]()
    assert q.items == [[1]]


def test_close_flushes_and_cancels_the_join():
    q = RecordingQueue()
    sender = Sender(q)
    sender.send("last")
    sender.close()
    assert q.items == [["last"]]
    assert q.cancelled


# ---- Sender to Receiver over a real queue --------------------------------------------


def test_batch_crosses_a_real_queue(make_queue):
    q = make_queue()
    sender, receiver = Sender(q, tag=1), Receiver(q)
    sender.send(("Relay", 1, 2, "hi"))
    sender.send(("Drop", 1))
    sender.flush()
    assert receiver.get(WAIT) == (1, [("Relay", 1, 2, "hi"), ("Drop", 1)])
    assert receiver.drain() == []


def test_get_returns_none_on_timeout(make_queue):
    receiver = Receiver(make_queue())
    assert receiver.get(0.01) is None


def test_drain_of_an_empty_queue_is_empty(make_queue):
    assert Receiver(make_queue()).drain() == []


def test_fileno_becomes_readable_when_a_batch_is_put(make_queue):
    q = make_queue()
    sender, receiver = Sender(q), Receiver(q)
    fd = receiver.fileno()
    assert isinstance(fd, int)
    assert not readable(fd, 0)
    sender.send("wake")
    sender.flush()
    assert readable(fd, WAIT)
    assert receiver.drain() == [["wake"]]
    assert not readable(fd, 0)


def put_batches(q, n):
    """Child process: put ``n`` tagged batches and wait until they are in the pipe."""
    sender = Sender(q, tag=7)
    for i in range(n):
        sender.send(i)
        sender.send(str(i))
        sender.flush()
    q.close()
    q.join_thread()


def test_drain_returns_every_waiting_batch_without_blocking(make_queue):
    q = make_queue()
    child = CTX.Process(target=put_batches, args=(q, 3))
    child.start()
    child.join(WAIT)
    assert child.exitcode == 0
    child.close()
    receiver = Receiver(q)
    assert receiver.drain() == [(7, [0, "0"]), (7, [1, "1"]), (7, [2, "2"])]
    assert receiver.drain() == []
    assert receiver.get(0.01) is None
