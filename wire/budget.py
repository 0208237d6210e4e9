"""Token buckets: how much a client may send, and how many times an address may connect.

No I/O here, and no clock: every call takes ``now`` (seconds on any monotonic
clock), so the tests drive time by hand. A bucket holds up to ``burst``
tokens and gains ``rate`` a second; what it admits over any stretch of ``t``
seconds is at most ``rate * t + burst``.

A worker gives each client a ``Budget`` (``--rate``, ``--burst``): one bucket
of lines and one of bytes. A client over it is not cut: its lines wait,
undecoded, and its reading pauses until ``Budget.due`` says tokens are back,
so TCP slows it down (docs/PROTOCOL.md, "Flow control"). The acceptor keeps
one ``TokenBucket`` per address for ``--accept-rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Slack for float rounding: ``due`` is never a hair too early to be of use.
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; starts full."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and burst > 0):
            raise ValueError("a bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def level(self, now: float) -> float:
        """The tokens held at ``now`` (negative while an overdraft is being paid back)."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` if the bucket holds it; whether it did."""
        if self.level(now) + _EPSILON < amount:
            return False
        self.tokens -= amount
        return True

    def spend(self, amount: float, now: float) -> None:
        """Spend ``amount`` whatever the bucket holds: an overdraft waits to be paid back."""
        self.level(now)
        self.tokens -= amount

    def due(self, amount: float, now: float) -> float:
        """Seconds from ``now`` until the bucket holds ``amount`` (at most ``burst``)."""
        short = min(amount, self.burst) - self.level(now)
        return max(0.0, short / self.rate + _EPSILON)

    def full(self, now: float) -> bool:
        """Whether it holds ``burst``: such a bucket is as good as a new one."""
        return self.level(now) >= self.burst


@dataclass(frozen=True, slots=True)
class Pace:
    """The numbers every client's ``Budget`` is made of (one worker's, from the flags).

    Lines: ``rate`` a second, ``burst`` at once. Bytes: a quarter of
    ``--max-line`` per line token (``rate * max_line / 4`` a second, ``burst *
    max_line / 4`` at once), so lines of up to a quarter of the limit go at
    the line rate and the longest ones at a quarter of it. ``cost`` is the
    most one line can take (``--max-line`` and its ``\\r\\n``).
    """

    rate: float
    burst: int
    byte_rate: float
    byte_burst: float
    cost: int

    @classmethod
    def of(cls, rate: float, burst: int, max_line: int) -> Pace | None:
        """The pace of ``--rate``/``--burst``; None when ``rate`` is 0 (no budget)."""
        if not rate:
            return None
        share = max_line / 4
        return cls(rate, burst, rate * share, max(burst * share, max_line + 2.0), max_line + 2)


class Budget:
    """One client's allowance of lines and bytes.

    A line is taken while both buckets have something left; its bytes are
    paid after it is decoded (its length is known only then), so the byte
    bucket may overdraw by one line at most: over ``t`` seconds a client
    gets at most ``rate * t + burst`` lines and ``byte_rate * t + byte_burst
    + cost`` bytes.
    """

    __slots__ = ("pace", "lines", "bytes")

    def __init__(self, pace: Pace, now: float) -> None:
        self.pace = pace
        self.lines = TokenBucket(pace.rate, pace.burst, now)
        self.bytes = TokenBucket(pace.byte_rate, pace.byte_burst, now)

    def allowance(self, now: float) -> int:
        """How many lines may be taken now, whatever their length; 0 while over budget.

        While bytes are short, lines come one at a time, each paid for before
        the next is allowed.
        """
        lines = math.floor(self.lines.level(now) + _EPSILON)
        left = self.bytes.level(now)
        if lines < 1 or left < -_EPSILON:
            return 0
        return min(lines, max(1, math.floor(left / self.pace.cost)))

    def spend(self, lines: int, nbytes: int, now: float) -> None:
        """``lines`` lines of ``nbytes`` bytes in all were taken."""
        self.lines.spend(lines, now)
        self.bytes.spend(nbytes, now)

    def due(self, now: float) -> float:
        """Seconds until at least one line may be taken."""
        return max(self.lines.due(1, now), self.bytes.due(0, now))

    def settle(self, now: float) -> None:
        """Bring both buckets up to ``now``: the budget is leaving for another worker."""
        self.lines.level(now)
        self.bytes.level(now)

    def rebase(self, now: float) -> None:
        """Go on from ``now`` on another worker's loop: what the budget held when it left
        (``settle``), it holds now; the time in between earns nothing."""
        self.lines.stamp = self.bytes.stamp = now
