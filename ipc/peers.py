"""Live clients by source address, per worker, in shared memory: what ``--max-per-ip`` counts.

The acceptor decides, but the workers know when a client is gone (they close
it, it moves between them, they die), so each worker keeps a count of its
clients by address where the acceptor can read it, and nothing is sent
anywhere. Each worker owns one count-min sketch (Cormode and Muthukrishnan):
``ROWS`` rows of ``WIDTH`` counters, an address adding to one counter per
row, chosen by a hash every process computes alike: the numbers a SplitMix64
generator (Steele, Lea and Flood) gives when seeded with the address, one a
row. It needs no import: hashlib would load OpenSSL's half of it into every
process, 0.6 MB of heap each, the supervisor's inherited by every child. An address's count is
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

import socket
from typing import Any

#: Rows and counters per row of each worker's sketch: 128 KiB a worker.
ROWS, WIDTH_BITS = 4, 13
WIDTH = 1 << WIDTH_BITS

_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's step: 2**64 over the golden ratio, odd
_M64 = (1 << 64) - 1


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
    # 4 and 8 byte keys apart: an IPv4 address shares its every counter with one /64 only
    state = int.from_bytes(key, "little") + len(key) * _GOLDEN
    found = []
    for row in range(ROWS):
        state += _GOLDEN
        z = state & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        found.append(row * WIDTH + ((z ^ (z >> 31)) >> (64 - WIDTH_BITS)))
    return tuple(found)


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
