"""Lines a client sent to a partner on another worker, kept until that worker has them.

A line to a partner on another worker travels through the matchmaker. If the
matchmaker dies with lines in its hands, the sender's worker sends the lines
not yet confirmed again to the new one, numbered, and the partner's worker
drops the numbers it has already written. The partner's worker confirms what
it has written every 50 ms (``workers.hub.CONFIRM_AFTER``), so this holds about
50 ms worth of lines, and never more than ``limit`` bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class Unconfirmed:
    """Numbered lines of one session, oldest first, up to ``limit`` bytes."""

    __slots__ = ("lines", "next_seq", "size", "limit")

    def __init__(self, limit: int) -> None:
        self.lines: deque[tuple[int, str]] = deque()
        self.next_seq = 1
        self.size = 0
        self.limit = limit  # beyond it the oldest lines can no longer be sent again

    def add(self, text: str) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.lines.append((seq, text))
        self.size += len(text)
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()[1])
        return seq

    def confirm(self, seq: int) -> None:
        lines = self.lines
        while lines and lines[0][0] <= seq:
            self.size -= len(lines.popleft()[1])

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)
