"""Per-worker counters in shared memory, for the acceptor to place connections by.

Each slot has exactly one writer for each counter (the worker for ``live``,
``received``, ``up`` and ``beat``; the supervisor resets them when a worker
dies), so plain unsynchronised numbers are enough.
"""

from __future__ import annotations

from typing import Any

from ipc.peers import PeerCounts

#: How often a worker's event loop writes its ``beat``.
BEAT_INTERVAL = 0.25

#: A worker whose last beat is older than this (six beats missed) is stopped,
#: stuck or swamped: the acceptor passes it over while another worker beats, so
#: new clients do not queue behind it for the seconds until it is replaced.
SILENT_AFTER = 1.5


class WorkerLoad:
    """``live`` clients, sockets ``received`` so far, whether a worker is ``up``, and its
    last ``beat``: ``time.monotonic()`` (one clock for every process on Linux), 0 before
    its loop first ran; with ``peers``, its clients by address (``ipc.peers``)."""

    def __init__(self, ctx: Any, workers: int, peers: bool = False) -> None:
        self.live = ctx.RawArray("q", workers)
        self.received = ctx.RawArray("q", workers)
        self.up = ctx.RawArray("b", workers)
        self.beat = ctx.RawArray("d", workers)
        self.peers = PeerCounts(ctx, workers) if peers else None

    def __len__(self) -> int:
        return len(self.live)

    def down(self, slot: int) -> None:
        """Called by the supervisor when the worker in ``slot`` died."""
        self.up[slot] = 0
        self.live[slot] = 0
        self.beat[slot] = 0.0
        if self.peers is not None:
            self.peers.down(slot)
