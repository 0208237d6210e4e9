"""Live clients by source address, per worker, in shared memory: what ``--max-per-ip`` counts.

The acceptor decides, but the workers know when a client is gone (they close
it, it moves between them, they die), so each worker keeps a count of its
clients by address where the acceptor can read it, and nothing is sent
anywhere. Each worker owns one count-min sketch (Cormode and Muthukrishnan):
``ROWS`` rows of ``WIDTH`` counters, an address adding to one counter per
row, chosen by a hash every process computes alike. An address's count is
the smallest of its counters, summed over the workers: never less than the
truth, and more only by clients of other addresses that share every one of
its counters (at 10,000 clients, about one client now and then).

One writer per worker's sketch (that worker; the supervisor zeroes it when
the worker dies, as ``ipc.load.WorkerLoad.down`` does the rest), so plain
unsynchronised integers are enough: a client that moves is taken off by one
worker and put on by the other, and is missing from the sum for that moment
at most.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

#: Rows and counters per row of each worker's sketch: 128 KiB a worker.
ROWS, WIDTH = 4, 8192

_V4_MAPPED = bytes(10) + b"\xff\xff"


def address_key(host: str) -> bytes:
    """Whom ``host`` counts as: an IPv4 address itself, an IPv6 address by its /64 (one
    subscriber's usual allocation), an IPv4-mapped IPv6 address as the IPv4 one."""
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    return packed[12:] if packed[:12] == _V4_MAPPED else packed[:8]


def cells(key: bytes) -> tuple[int, ...]:
    """The counter ``key`` adds to in each row, as indexes into one worker's sketch."""
    digest = hashlib.blake2b(key, digest_size=2 * ROWS).digest()
    return tuple(
        row * WIDTH + int.from_bytes(digest[2 * row : 2 * row + 2], "little") % WIDTH
        for row in range(ROWS)
    )


class PeerCounts:
    """Every worker's sketch, side by side in one shared array."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self.workers = workers
        self.counts = ctx.RawArray("i", workers * ROWS * WIDTH)

    def add(self, worker: int, key: bytes, delta: int) -> None:
        """Called by ``worker`` only: a client from ``key`` came (1) or went (-1)."""
        base = worker * ROWS * WIDTH
        counts = self.counts
        for cell in cells(key):
            counts[base + cell] += delta

    def count(self, key: bytes) -> int:
        """Clients from ``key`` on every worker (maybe a few more, never fewer)."""
        counts = self.counts
        size = ROWS * WIDTH
        sums = [sum(counts[w * size + cell] for w in range(self.workers)) for cell in cells(key)]
        return max(0, int(min(sums)))

    def down(self, worker: int) -> None:
        """Called by the supervisor when ``worker`` died: its clients are gone."""
        size = ROWS * WIDTH
        self.counts[worker * size : (worker + 1) * size] = [0] * size
