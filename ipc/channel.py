"""The one small interface over ``multiprocessing`` queues.

Senders collect messages and put them as one list per event-loop tick, so a
burst of chat lines costs one pickle and one pipe write, not one per line.
Receivers expose the queue's pipe as a file descriptor so a worker's event
loop can wait on it next to its sockets instead of blocking a thread.

Each queue has exactly one producer and one consumer. A process killed in
the middle of a put or a get can leave its queue locked or holding half a
message, so a queue is never reused once either end has died: each worker
slot has a pool of links (a queue each way), and a restarted process moves
its slot to the next unused link (``Links``).

Having one producer and one consumer is also why the queues take no named
semaphores (``one_to_one_queue``): a ``multiprocessing`` queue's locks only
keep several producers, or several consumers, from interleaving on its pipe.
"""

from __future__ import annotations

import multiprocessing.queues
import pickle
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

#: Largest piece put on a queue at once. A queue's pipe takes a write of at
#: most PIPE_BUF (4096) bytes whole or not at all, so a process killed during a
#: put can never leave half a message behind for the reader to block on.
CHUNK = 4000

_MORE, _LAST = b"\x00", b"\x01"


class Sender:
    """Batches messages for one queue; ``flush`` sends them as one item (or a few pieces)."""

    __slots__ = ("_queue", "_pending", "_schedule")

    def __init__(
        self,
        q: multiprocessing.queues.Queue[Any],
        schedule: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._queue = q
        self._pending: list[Any] = []
        self._schedule = schedule  # e.g. loop.call_soon: flush once at the end of the tick

    def send(self, message: Any) -> None:
        if not self._pending and self._schedule is not None:
            self._schedule(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        if not self._pending:
            return
        data = pickle.dumps(self._pending, pickle.HIGHEST_PROTOCOL)
        self._pending = []
        put = self._queue.put
        end = len(data)
        for start in range(0, end - CHUNK, CHUNK):
            put(_MORE + data[start : start + CHUNK])
        put(_LAST + data[(end - 1) // CHUNK * CHUNK :])

    def close(self) -> None:
        """Flush, then let the process exit without waiting for an absent reader."""
        self.flush()
        self._queue.cancel_join_thread()

    def abandon(self) -> None:
        """The reader died: drop what is pending and never wait for this queue again."""
        self._pending = []
        self._queue.cancel_join_thread()


class Receiver:
    """Reads batches from one queue without blocking, from an event loop or a wait() loop."""

    __slots__ = ("_queue", "_parts")

    def __init__(self, q: multiprocessing.queues.Queue[Any]) -> None:
        self._queue = q
        self._parts: list[bytes] = []  # pieces of a batch not yet complete

    def fileno(self) -> int:
        """Readable when a piece is waiting."""
        reader = self._queue._reader  # type: ignore[attr-defined]
        return int(reader.fileno())

    def drain(self) -> list[Any]:
        """Every complete batch waiting now, without blocking."""
        batches: list[Any] = []
        parts = self._parts
        while True:
            try:
                piece = self._queue.get_nowait()
            except queue.Empty:
                return batches
            parts.append(piece[1:])
            if piece[:1] == _LAST:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                batches.append(pickle.loads(data))


class _LocalLock:
    """A queue's reader or writer lock, held only against this process's own threads.

    A queue with one producer and one consumer process needs no lock between
    processes, so it needs no named semaphore. Each named semaphore is a file in
    /dev/shm that only multiprocessing's resource tracker removes when the server
    is killed, and a SIGKILL to the whole process group kills the tracker too;
    each also costs every process that opens it a page. Pickled, this arrives as
    a fresh lock of the receiving process.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if not block:
            return self._lock.acquire(False)
        return self._lock.acquire(True, -1 if timeout is None else timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[type[_LocalLock], tuple[()]]:
        return (_LocalLock, ())


class _Unbounded:
    """A queue's ``BoundedSemaphore(maxsize)``, for a queue with no size limit.

    ``ctx.Queue()`` has none either (its bound is SEM_VALUE_MAX), so there the
    semaphore only counts; nothing here reads the count (``qsize``, ``full``).
    """

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass


class _OneToOne:
    """What ``multiprocessing.queues.Queue`` asks its context for: its locks."""

    @staticmethod
    def Lock() -> _LocalLock:  # noqa: N802 (the context's method name)
        return _LocalLock()

    @staticmethod
    def BoundedSemaphore(value: int) -> _Unbounded:  # noqa: N802
        return _Unbounded()


def one_to_one_queue() -> multiprocessing.queues.Queue[Any]:
    """A ``multiprocessing`` queue (its pipe, its feeder thread) without named semaphores.

    Only for one producer process and one consumer process, each using the
    queue from one thread (the producer's feeder thread aside): that is what
    the locks it leaves out would enforce between processes.
    """
    return multiprocessing.queues.Queue(ctx=_OneToOne())


class Link(NamedTuple):
    """The two queues between one worker and the matchmaker."""

    up: multiprocessing.queues.Queue[Any]  # worker -> matchmaker
    down: multiprocessing.queues.Queue[Any]  # matchmaker -> worker


class Links:
    """Per worker slot, a pool of links and the index of the one in use.

    Built by the supervisor before any child starts (queues can only be handed
    to a process when it is spawned); ``current`` is shared memory, so the
    supervisor can move a slot to a fresh link and every process can see it.
    """

    def __init__(self, ctx: Any, workers: int, pool: int) -> None:
        self.pools = [
            [Link(one_to_one_queue(), one_to_one_queue()) for _ in range(pool)]
            for _ in range(workers)
        ]
        self.current = ctx.RawArray("i", workers)

    def link(self, slot: int) -> Link:
        index: int = self.current[slot]
        return self.pools[slot][index]

    def advance(self, slot: int) -> bool:
        """Move ``slot`` to its next unused link; False when the pool is used up."""
        if self.current[slot] + 1 >= len(self.pools[slot]):
            return False
        self.current[slot] += 1
        return True
