"""Line framing for protocol v1: bytes in, lines out; lines in, bytes out.

No I/O here, no clocks. One decoder per connection, fed whatever the socket
gave; it must stay O(bytes read) however the bytes are split (a line sent one
byte per read must not cost quadratic time, cf. h11's ``_receivebuffer``), and
it must hold at most ``max_line`` bytes of an unfinished line, so a client can
never make the server buffer more than that.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from wire.errors import ErrorCode

#: Default inbound line limit in bytes, terminator excluded. Long enough for any
#: chat line a person types, short enough that 10,000 clients each holding a
#: full partial line stay under 40 MiB. IRC allows 512 bytes (ergo 4 KiB with
#: its ``maxline`` extension); aiosmtpd's line limit is 1001; we take 4 KiB.
DEFAULT_MAX_LINE = 4096

_CR = 13

#: The buffer of a decoder holding nothing: an empty bytearray is 56 bytes of every
#: idle connection; this one is shared.
_EMPTY = b""

#: What ``LineDecoder.feed`` yields: a decoded line, or the error its bytes earned.
Event = str | ErrorCode


class Decoding:
    """What every decoder offers on top of its ``receive`` and ``take``."""

    # Without it every decoder (one per client) would carry a ``__dict__`` as well as
    # its slots: 56 bytes of every idle client.
    __slots__ = ()

    def receive(self, data: bytes) -> None:
        raise NotImplementedError

    def take(self, limit: int) -> list[Event]:
        raise NotImplementedError

    def between_lines(self) -> bool:
        """Nothing held and nothing being discarded: the next byte starts a new line."""
        return False  # unless the decoder says so

    def next_event(self) -> Event | None:
        """The next complete line (or the error its bytes earned); None until more arrive."""
        events = self.take(1)
        return events[0] if events else None

    def feed(self, data: bytes) -> list[Event]:
        """Add bytes from the peer; return every line (or error) they completed."""
        self.receive(data)
        return self.take(sys.maxsize)


class LineDecoder(Decoding):
    """Splits a byte stream into UTF-8 lines ending in ``\\n`` (a ``\\r`` before it is dropped).

    A line longer than ``max_line`` yields ``ErrorCode.TOO_LONG`` once and its
    bytes are discarded up to the next ``\\n``; a line that is not UTF-8 yields
    ``ErrorCode.ENCODING``. Either way decoding resumes with the next line.
    """

    __slots__ = ("max_line", "_buf", "_scanned", "_discarding")

    #: what holds the bytes of lines not yet taken (a test swaps in a probe)
    _buffer: ClassVar[type[bytearray]] = bytearray

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf: bytearray | bytes = _EMPTY  # a bytearray while it holds something
        self._scanned = 0  # bytes of _buf already searched for b"\n"
        self._discarding = False  # inside a line already reported TOO_LONG

    @property
    def pending(self) -> int:
        """Bytes held: of lines not yet taken, and of a line not yet ended."""
        return len(self._buf)

    def between_lines(self) -> bool:
        return not self._buf and not self._discarding

    def receive(self, data: bytes) -> None:
        """Add bytes from the peer; ``take`` decodes the lines, a few at a time.

        Lines stay bytes until they are taken, so a connection that stops taking
        them (its reading paused) holds one read's worth of bytes, not one
        object per line.
        """
        if self._buf:
            self._buf += data
        elif data:
            self._buf = self._buffer(data)

    def take(self, limit: int) -> list[Event]:
        """Up to ``limit`` complete lines (or the errors their bytes earned), oldest first."""
        buf = self._buf
        events: list[Event] = []
        start = 0
        search = self._scanned
        max_line = self.max_line
        while (nl := buf.find(b"\n", search)) >= 0:
            if self._discarding:
                self._discarding = False
            else:
                end = nl - 1 if nl > start and buf[nl - 1] == _CR else nl
                if end - start > max_line:
                    events.append(ErrorCode.TOO_LONG)
                else:
                    try:
                        events.append(buf[start:end].decode("utf-8"))
                    except UnicodeDecodeError:
                        events.append(ErrorCode.ENCODING)
            start = search = nl + 1
            if len(events) >= limit:
                self._keep(start)
                self._scanned = 0  # more lines may be complete: look again next time
                return events
        if self._discarding or len(buf) - start > max_line + 1:  # +1: a '\r' may follow
            if not self._discarding:
                events.append(ErrorCode.TOO_LONG)
                self._discarding = True
            start = len(buf)
        self._keep(start)
        self._scanned = len(self._buf)
        return events

    def _keep(self, start: int) -> None:
        """Drop the bytes before ``start``; nothing left is the shared empty buffer."""
        buf = self._buf
        if start >= len(buf):
            self._buf = _EMPTY
        elif start:
            del buf[:start]  # type: ignore[union-attr]  # not empty: a bytearray


def encode(line: str) -> bytes:
    """One protocol line, terminated, as bytes for the wire."""
    return (line + "\n").encode("utf-8")
