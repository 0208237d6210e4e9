"""Per-address limits at the door: ``--max-per-ip`` and ``--accept-rate``.

The acceptor asks before it hands a connection over; a refused one gets
``ERROR TOO_MANY`` and is closed. No sockets and no clock here (time is
passed in). An address is an IPv4 address, or an IPv6 /64 (``ipc.peers``).

Connections at once are what the workers count (``ipc.peers.PeerCounts``:
they know when a client closes, moves or dies with its worker) plus what
the acceptor handed over and no worker has counted yet. A worker counts a
client before it counts the hand-over in ``WorkerLoad.received``, so a
hand-over is the acceptor's to count until that number reaches it: then it
is surely the worker's. New connections a second are a token bucket per
address, which starts full and is forgotten once full again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ipc.peers import PeerCounts
from matchmaker.drops import Reason
from wire.budget import TokenBucket

#: Seconds between two sweeps of the buckets of addresses gone quiet.
TIDY_EVERY = 5.0


class Admission:
    """Whether one more connection from an address may come in."""

    def __init__(
        self,
        max_per_ip: int,
        accept_rate: float,
        peers: PeerCounts | None,
        received: Sequence[int],
    ) -> None:
        self.max_per_ip = max_per_ip if peers is not None else 0
        self.accept_rate = accept_rate
        self.burst = max(1.0, accept_rate)  # a second's worth at once
        self.peers = peers
        self.received = received  # hand-overs each worker has taken (and counted)
        self.pending: list[deque[tuple[int, bytes]]] = [deque() for _ in received]
        self.in_hand: dict[bytes, int] = {}  # handed over, not yet counted by a worker
        self.buckets: dict[bytes, TokenBucket] = {}
        self.tidied = 0.0

    def refusal(self, peer: bytes, now: float) -> tuple[Reason, str] | None:
        """Why a new connection from ``peer`` is refused, or None to let it in (and count it
        against ``--accept-rate``)."""
        if self.max_per_ip:
            live = self.live(peer)
            if live >= self.max_per_ip:
                why = (
                    f"{live} connections from its address already (--max-per-ip {self.max_per_ip})"
                )
                return Reason.TOO_MANY, why
        if self.accept_rate:
            bucket = self.buckets.get(peer)
            if bucket is None:
                bucket = self.buckets[peer] = TokenBucket(self.accept_rate, self.burst, now)
            if not bucket.take(1, now):
                why = f"over {self.accept_rate:g} new connections a second (--accept-rate)"
                return Reason.ACCEPT_RATE, why
        return None

    def handed(self, worker: int, seq: int, peer: bytes) -> None:
        """``peer``'s connection went to ``worker`` as its ``seq``-th hand-over."""
        if self.max_per_ip:
            self.pending[worker].append((seq, peer))
            self.in_hand[peer] = self.in_hand.get(peer, 0) + 1

    def live(self, peer: bytes) -> int:
        """Connections from ``peer`` now (maybe a few more, never fewer)."""
        self.settle()
        assert self.peers is not None
        return self.peers.count(peer) + self.in_hand.get(peer, 0)

    def settle(self) -> None:
        """Hand-overs a worker has counted are its own now."""
        in_hand = self.in_hand
        for worker, queue in enumerate(self.pending):
            taken = self.received[worker]
            while queue and queue[0][0] <= taken:
                _, peer = queue.popleft()
                left = in_hand[peer] - 1
                if left:
                    in_hand[peer] = left
                else:
                    del in_hand[peer]

    def tidy(self, now: float) -> None:
        """Forget the buckets of addresses that have been quiet long enough to be full."""
        if now - self.tidied < TIDY_EVERY:
            return
        self.tidied = now
        self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
