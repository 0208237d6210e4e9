"""How a connection's bytes reach its socket: all at once, or one record at a time.

The line dialect writes what a loop tick produced in one call. The original
C++ client reads one 256-byte record per ``read()``, drops whatever was
coalesced behind it and overruns its buffer past about 1000 bytes, so legacy
connections get one record per write, at least ``pace`` seconds apart.
Either way ``queued()`` is what the client has not taken yet, for ``--sendq``,
and ``taken()`` counts what the client's side of the connection has
acknowledged, to tell a client that reads slowly from one that does not read
at all (what the kernel holds for the client, sent or not, is not taken). Past ``high`` bytes queued
the connection's protocol hears ``pause_writing``, and ``resume_writing`` once
no more than ``low`` are left (asyncio's flow control, which ``PacedOutput``
does itself).
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import struct
import termios
from typing import Protocol

from wire.legacy import RECORD


class Writer(Protocol):
    """The protocol side of asyncio's write flow control."""

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


def reset(transport: asyncio.Transport) -> None:
    """Close at once, dropping what the kernel still holds for the peer (RST, not FIN)."""
    if transport.is_closing() and transport.get_write_buffer_size() == 0:
        return  # flushed in time; the normal close is under way
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def in_kernel(transport: asyncio.Transport) -> int:
    """Bytes the kernel holds for the peer: not sent yet, or sent and not acknowledged.

    A peer that does not read stops acknowledging once its receive buffer is
    full, which does not grow while nothing reads it; our own send buffer may
    grow to megabytes, so what it holds must not count as read.
    """
    sock = transport.get_extra_info("socket")
    return 0 if sock is None else socket_unsent(sock)


def unread_input(transport: asyncio.Transport) -> bool:
    """Whether bytes from the peer wait in the kernel, unread."""
    sock = transport.get_extra_info("socket")
    return sock is not None and socket_unread(sock)


def socket_unsent(sock: socket.socket) -> int:
    """``in_kernel`` of a socket itself (one without a transport: ``workers.parking``)."""
    return _ioctl_count(sock, termios.TIOCOUTQ)


def socket_unread(sock: socket.socket) -> bool:
    """``unread_input`` of a socket itself."""
    return _ioctl_count(sock, termios.FIONREAD) > 0


def _ioctl_count(sock: socket.socket, request: int) -> int:
    out = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), request, out, True)
    except OSError:
        return 0
    return out[0]


class DirectOutput:
    """Everything at once; asyncio buffers what the socket does not take."""

    __slots__ = ("transport", "loop", "linger", "written")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        linger: float,
        high: int,
        low: int,
    ) -> None:
        self.transport, self.loop, self.linger = transport, loop, linger
        self.written = 0
        transport.set_write_buffer_limits(high, low)

    def send(self, data: bytes) -> None:
        self.written += len(data)
        self.transport.write(data)

    def queued(self) -> int:
        return self.transport.get_write_buffer_size()

    def taken(self) -> int:
        transport = self.transport
        return self.written - transport.get_write_buffer_size() - in_kernel(transport)

    def finish(self, data: bytes, unread: bool = False) -> None:
        """Send ``data`` last and close; reset a peer that has not read it all after ``linger``.

        With ``unread`` input, closing would reset the connection at once, and the
        peer's kernel would drop what it had not read yet, ``data`` among it. So
        only our sending side is shut, once ``data`` is out; the protocol discards
        what else arrives and closes at the peer's EOF, or ``linger`` does.
        """
        transport = self.transport
        self.send(data)
        if unread and transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(self.linger, self._linger_over)
            return
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(self.linger, reset, transport)

    def _linger_over(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size():
            reset(transport)
        else:
            transport.close()


class PacedOutput:
    """One 256-byte record per write, at least ``pace`` seconds apart.

    A record is written only once the socket has taken the one before, so what
    the client does not read waits here, counted, and not in the transport.
    """

    __slots__ = (
        "transport",
        "loop",
        "linger",
        "pace",
        "unsent",
        "next_at",
        "timer",
        "closing",
        "writer",
        "high",
        "low",
        "paused",
        "written",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        linger: float,
        pace: float,
        writer: Writer,
        high: int,
        low: int,
    ) -> None:
        self.transport, self.loop, self.linger, self.pace = transport, loop, linger, pace
        self.writer, self.high, self.low = writer, high, low
        self.unsent = bytearray()
        self.next_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.paused = False
        self.written = 0
        # the records' own flow control stands in for the transport's
        transport.set_write_buffer_limits(1 << 30)

    def send(self, data: bytes) -> None:
        self.unsent += data
        if not self.paused and len(self.unsent) > self.high:
            self.paused = True
            self.writer.pause_writing()
        if self.timer is None:
            self._write_one()

    def queued(self) -> int:
        return len(self.unsent) + self.transport.get_write_buffer_size()

    def taken(self) -> int:
        transport = self.transport
        return self.written - transport.get_write_buffer_size() - in_kernel(transport)

    def finish(self, data: bytes) -> None:
        """Send ``data`` last and close; reset a peer that stops reading for ``linger``."""
        self.closing = True
        self.send(data)
        self.loop.call_later(self.linger, self._give_up, self.taken())

    def _write_one(self) -> None:
        self.timer = None
        transport = self.transport
        if transport.is_closing():
            return
        now = self.loop.time()
        if now < self.next_at or transport.get_write_buffer_size():
            # too soon, or the socket has not taken the last record: wait a pace
            self.timer = self.loop.call_at(max(self.next_at, now + self.pace), self._write_one)
            return
        if self.unsent:
            chunk = bytes(self.unsent[:RECORD])
            del self.unsent[:RECORD]
            self.written += len(chunk)
            transport.write(chunk)
            self.next_at = now + self.pace
            if self.paused and len(self.unsent) <= self.low:
                self.paused = False
                self.writer.resume_writing()
        if self.unsent:
            self.timer = self.loop.call_at(self.next_at, self._write_one)
        elif self.closing:
            transport.close()

    def _give_up(self, taken: int) -> None:
        """``linger`` after the close: reset a client that read nothing meanwhile."""
        if self.transport.is_closing() and not self.transport.get_write_buffer_size():
            if not self.unsent:
                return  # flushed in time; the normal close is under way
        if self.taken() == taken:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.unsent.clear()
            reset(self.transport)
            return
        self.loop.call_later(self.linger, self._give_up, self.taken())


Output = DirectOutput | PacedOutput
