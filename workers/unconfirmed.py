"""Lines a client sent to a partner on another worker, kept until that worker has them.

A line to a partner on another worker travels through the matchmaker. If the
matchmaker dies with lines in its hands, the sender's worker sends the lines
not yet confirmed again to the new one, numbered, and the partner's worker
drops the numbers it has already written. The partner's worker confirms what
it has written every 50 ms (``workers.hub.CONFIRM_AFTER``), or sooner after
many bytes, and only while its client keeps up with them. Nothing here is ever
dropped: the sender's reading pauses instead, once more than a window of bytes
waits here (``ClientProtocol.held``), so this is credit-based flow control
between two workers as well as the copy kept for a new matchmaker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class Unconfirmed:
    """Numbered lines of one session, oldest first; ``size`` counts their characters."""

    __slots__ = ("lines", "next_seq", "size")

    def __init__(self) -> None:
        self.lines: deque[tuple[int, str]] = deque()
        self.next_seq = 1
        self.size = 0

    def add(self, text: str) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.lines.append((seq, text))
        self.size += len(text)
        return seq

    def confirm(self, seq: int) -> None:
        lines = self.lines
        while lines and lines[0][0] <= seq:
            self.size -= len(lines.popleft()[1])

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)
