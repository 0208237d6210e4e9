"""The one small interface over ``multiprocessing`` queues.

Senders collect messages and write them as one list per event-loop tick, so
a burst of chat lines costs one pickle and one pipe write, not one per line.
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
import os
import pickle
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import asyncio

#: Largest piece written at once. A pipe takes a write of at most PIPE_BUF
#: (4096) bytes whole or not at all, so a process killed while sending can never
#: leave half a frame behind for the reader to block on, and a full pipe refuses
#: a frame without taking part of it.
CHUNK = 4000

_MORE, _LAST = b"\x00", b"\x01"
_LENGTH = struct.Struct("!i")  # the frame header of ``multiprocessing.connection``


class Sender:
    """Batches messages for one queue; ``flush`` writes them as one frame (or a few).

    The frames go straight into the queue's pipe from the calling thread, in
    the framing the queue's own reader expects, not through the queue's feeder
    thread: handing every batch to a thread cost a lock, a wake-up and a GIL
    hand-off per batch, on the path of every request and relayed line. The pipe
    is non-blocking, so a full pipe never stalls the process: what it refuses
    waits here, in order, and goes out once the pipe is writable again (with
    ``loop``, the event loop watches for that; without, the owner checks
    ``blocked`` and calls ``resume``).
    """

    __slots__ = ("_queue", "_fd", "_pending", "_frames", "_loop", "_pack", "_watched")

    def __init__(
        self,
        q: multiprocessing.queues.Queue[Any],
        loop: asyncio.AbstractEventLoop | None = None,
        pack: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self._queue = q
        self._pack = pack  # what a batch becomes before pickling (e.g. plain tuples)
        self._fd: int = q._writer.fileno()  # type: ignore[attr-defined]
        os.set_blocking(self._fd, False)
        self._pending: list[Any] = []
        self._frames: deque[bytes] = deque()  # written in order once the pipe has room
        self._loop = loop  # flushes once at the end of each tick, and waits for room
        self._watched = False  # the loop is watching the pipe for room

    @property
    def blocked(self) -> bool:
        """Frames are waiting for room in the pipe."""
        return bool(self._frames)

    def fileno(self) -> int:
        """Writable when the pipe has room again."""
        return self._fd

    def send(self, message: Any) -> None:
        if not self._pending and self._loop is not None:
            self._loop.call_soon(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []  # a batch that fails to pickle is not retried
        if self._pack is not None:
            batch = self._pack(batch)
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        frames = self._frames
        was_blocked = bool(frames)
        end = len(data)
        for start in range(0, end - CHUNK, CHUNK):
            frames.append(_LENGTH.pack(CHUNK + 1) + _MORE + data[start : start + CHUNK])
        last = data[(end - 1) // CHUNK * CHUNK :]
        frames.append(_LENGTH.pack(len(last) + 1) + _LAST + last)
        if not was_blocked:
            self.resume()

    def resume(self) -> None:
        """Write waiting frames until the pipe is full or none is left."""
        frames, fd = self._frames, self._fd
        while frames:
            try:
                os.write(fd, frames[0])
            except BlockingIOError:
                if self._loop is not None and not self._watched:
                    self._loop.add_writer(fd, self.resume)
                    self._watched = True
                return
            frames.popleft()
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watched and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._watched = False

    def close(self) -> None:
        """Flush what the pipe takes now; the process is leaving and will not wait."""
        self.flush()
        self.abandon()

    def abandon(self) -> None:
        """The reader died (or this end is leaving): drop everything not yet written."""
        self._pending = []
        self._frames.clear()
        self._unwatch()


class Receiver:
    """Reads batches from one queue without blocking, from an event loop or a wait() loop."""

    __slots__ = ("_reader", "_parts", "_unpack")

    def __init__(
        self,
        q: multiprocessing.queues.Queue[Any],
        unpack: Callable[[Any], list[Any]] | None = None,
    ) -> None:
        self._reader = q._reader  # type: ignore[attr-defined]
        self._unpack = unpack  # undoes the sender's ``pack``
        os.set_blocking(self._reader.fileno(), False)
        self._parts: list[bytes] = []  # pieces of a batch not yet complete

    def fileno(self) -> int:
        """Readable when a frame is waiting."""
        return int(self._reader.fileno())

    def drain(self) -> list[Any]:
        """Every complete batch waiting now, without blocking (frames are written whole)."""
        batches: list[Any] = []
        parts = self._parts
        reader = self._reader
        while True:
            try:
                piece = reader.recv_bytes()
            except BlockingIOError:  # nothing waiting: a frame is there whole or not at all
                return batches
            parts.append(piece[1:])
            if piece[:1] == _LAST:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                batch = pickle.loads(data)
                batches.append(batch if self._unpack is None else self._unpack(batch))


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
