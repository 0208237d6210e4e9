"""Per-worker counters in shared memory, for the acceptor to place connections by.

Each slot has exactly one writer for each counter (the worker for ``live``,
``received`` and ``up``; the supervisor resets them when a worker dies), so
plain unsynchronised integers are enough.
"""

from __future__ import annotations

from typing import Any


class WorkerLoad:
    """``live`` clients, sockets ``received`` so far, and whether a worker is ``up``."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self.live = ctx.RawArray("q", workers)
        self.received = ctx.RawArray("q", workers)
        self.up = ctx.RawArray("b", workers)

    def __len__(self) -> int:
        return len(self.live)

    def down(self, slot: int) -> None:
        """Called by the supervisor when the worker in ``slot`` died."""
        self.up[slot] = 0
        self.live[slot] = 0
