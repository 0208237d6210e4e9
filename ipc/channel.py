"""The one small interface over ``multiprocessing`` queues.

Senders collect messages and put them as one list per event-loop tick, so a
burst of chat lines costs one pickle and one pipe write, not one per line.
Receivers expose the queue's pipe as a file descriptor so a worker's event
loop can wait on it next to its sockets instead of blocking a thread.

Each queue has exactly one consumer; that is what makes reading it from the
event loop safe.
"""

from __future__ import annotations

import multiprocessing.queues
import queue
from collections.abc import Callable
from typing import Any


class Sender:
    """Batches messages for one queue; ``flush`` sends them as one item."""

    __slots__ = ("_queue", "_tag", "_pending", "_schedule")

    def __init__(
        self,
        q: multiprocessing.queues.Queue[Any],
        tag: int | None = None,
        schedule: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._queue = q
        self._tag = tag  # sent with every batch, so one queue can serve many senders
        self._pending: list[Any] = []
        self._schedule = schedule  # e.g. loop.call_soon: flush once at the end of the tick

    def send(self, message: Any) -> None:
        if not self._pending and self._schedule is not None:
            self._schedule(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []  # the queue pickles later, in its own thread
        self._queue.put(batch if self._tag is None else (self._tag, batch))

    def close(self) -> None:
        """Flush, then let the process exit without waiting for an absent reader."""
        self.flush()
        self._queue.cancel_join_thread()


class Receiver:
    """Reads batches from one queue, from a loop (``fileno``/``drain``) or blocking (``get``)."""

    __slots__ = ("_queue",)

    def __init__(self, q: multiprocessing.queues.Queue[Any]) -> None:
        self._queue = q

    def fileno(self) -> int:
        """Readable when a batch is waiting."""
        reader = self._queue._reader  # type: ignore[attr-defined]
        return int(reader.fileno())

    def drain(self) -> list[Any]:
        """Every batch waiting now, without blocking."""
        batches = []
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                return batches

    def get(self, timeout: float) -> Any | None:
        """The next batch, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
