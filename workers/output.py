"""How a connection's bytes reach its socket: all at once, or one record at a time.

The line dialect writes what a loop tick produced in one call. The original
C++ client reads one 256-byte record per ``read()``, drops whatever was
coalesced behind it and overruns its buffer past about 1000 bytes, so legacy
connections get one record per write, at least ``pace`` seconds apart.
Either way ``queued()`` is what the client has not taken yet, for ``--sendq``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from ipc.legacy import RECORD


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


class DirectOutput:
    """Everything at once; asyncio buffers what the socket does not take."""

    __slots__ = ("transport", "loop", "linger")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger: float
    ) -> None:
        self.transport, self.loop, self.linger = transport, loop, linger

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def queued(self) -> int:
        return self.transport.get_write_buffer_size()

    def finish(self, data: bytes) -> None:
        """Send ``data`` last and close; reset a peer that has not read it all after ``linger``."""
        transport = self.transport
        transport.write(data)
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(self.linger, reset, transport)


class PacedOutput:
    """One 256-byte record per write, at least ``pace`` seconds apart."""

    __slots__ = ("transport", "loop", "linger", "pace", "pending", "next_at", "timer", "closing")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        linger: float,
        pace: float,
    ) -> None:
        self.transport, self.loop, self.linger, self.pace = transport, loop, linger, pace
        self.pending = bytearray()
        self.next_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def send(self, data: bytes) -> None:
        self.pending += data
        if self.timer is None:
            self._write_one()

    def queued(self) -> int:
        return len(self.pending) + self.transport.get_write_buffer_size()

    def finish(self, data: bytes) -> None:
        self.closing = True
        self.send(data)
        self.loop.call_later(self.linger + len(self.pending) / RECORD * self.pace, self._give_up)

    def _write_one(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self.next_at:
            self.timer = self.loop.call_at(self.next_at, self._write_one)
            return
        if self.pending:
            self.transport.write(bytes(self.pending[:RECORD]))
            del self.pending[:RECORD]
            self.next_at = now + self.pace
        if self.pending:
            self.timer = self.loop.call_at(self.next_at, self._write_one)
        elif self.closing:
            self.transport.close()

    def _give_up(self) -> None:
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            reset(self.transport)


Output = DirectOutput | PacedOutput
OutputFactory = Callable[[asyncio.Transport], Output]
