"""ipc.channel.one_to_one_queue: a multiprocessing queue without named semaphores.

Named semaphores are files in /dev/shm; if the whole process group is killed,
the resource tracker dies with it and they stay there. A queue with one
producer and one consumer process needs no lock between processes at all.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import pickle
import queue
import threading
from typing import Any

import pytest

from ipc.channel import Links, Receiver, Sender, one_to_one_queue

CTX = multiprocessing.get_context("spawn")
WAIT = 10.0


def echo(inbox: Any, outbox: Any) -> None:
    """Child: send back every batch until an empty one."""
    receiver, sender = Receiver(inbox), Sender(outbox)
    while True:
        for batch in receiver_wait(receiver):
            if not batch:
                sender.close()
                return
            for message in batch:
                sender.send(message)
            sender.flush()


def receiver_wait(receiver: Receiver) -> list[Any]:
    from multiprocessing.connection import wait

    while True:
        assert wait([receiver.fileno()], WAIT), "nothing arrived"
        batches = receiver.drain()
        if batches:
            return batches


def test_it_creates_no_semaphore(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a named semaphore was created")

    monkeypatch.setattr(multiprocessing.synchronize.SemLock, "__init__", refuse)
    q = one_to_one_queue()
    links = Links(CTX, workers=2, pool=3)
    assert len(links.pools[1]) == 3
    q.close()


def test_a_pickled_lock_is_a_fresh_lock_of_the_receiving_process() -> None:
    q = one_to_one_queue()
    lock = q._rlock  # type: ignore[attr-defined]
    assert lock.acquire()
    copy = pickle.loads(pickle.dumps(lock))
    assert copy.acquire(False)  # not held: nothing is shared
    assert not lock.acquire(False)
    assert not lock.acquire(True, 0.01)
    lock.release()
    with lock:
        assert not lock.acquire(False)
    q.close()


def test_batches_cross_to_a_spawned_process_and_back() -> None:
    inbox, outbox = one_to_one_queue(), one_to_one_queue()
    child = CTX.Process(target=echo, args=(inbox, outbox))
    child.start()
    try:
        sender, receiver = Sender(inbox), Receiver(outbox)
        big = "x" * 20_000  # several pieces
        sent: list[list[Any]] = [["a", "b"], [big], [("tuple", 1)]]
        for batch in sent:
            for message in batch:
                sender.send(message)
            sender.flush()
        got: list[Any] = []
        while len(got) < len(sent):
            got += receiver_wait(receiver)
        assert got == sent
        sender.flush()
        inbox._writer.send_bytes(b"\x01" + pickle.dumps([]))  # type: ignore[attr-defined]
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        sender.close()


def test_the_consumer_lock_still_serialises_its_own_threads() -> None:
    q = one_to_one_queue()
    lock = q._rlock  # type: ignore[attr-defined]
    lock.acquire()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(_get_nowait(q)))
    t.start()
    t.join(WAIT)
    assert result == ["empty"]  # could not take the lock: Empty, not a race on the pipe
    lock.release()
    q.close()


def _get_nowait(q: Any) -> str:
    try:
        q.get_nowait()
    except queue.Empty:
        return "empty"
    return "got"
