"""Idle plain-TCP clients held without an event-loop transport, until they need one.

A uvloop transport costs a worker about 1.3 kB of RSS a client, more than all
the rest the worker keeps of an idle client (docs/PERFORMANCE.md, "Memory:
10,000 idle clients"), and most clients of a chat server sit idle. So a client
of the plain line port is *parked* as it comes: its socket waits in one epoll
of the worker's (``Lot``), which the loop watches with ``add_reader``, and what
the server writes to it (its ``WELCOME``, a ``CONNECTED``, a partner's lines)
goes straight to the socket while the socket takes it whole. At the first sign
that it needs more (bytes or a hang-up to read, a write the socket does not
take at once) it is *promoted*: it gets its transport, and what was written
meanwhile waits for it, in order. Closing a parked client, or moving it to
another worker, needs no transport at all.

TLS, WebSocket and legacy-port clients, and clients moved here from another
worker, get their transport at once (``Hub.adopt``, ``Hub.arrive``).
"""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Protocol

from workers.output import socket_unread, socket_unsent

#: What wakes a parked client: bytes to read, its end closed (EPOLLHUP and EPOLLERR
#: are always reported).
EVENTS = select.EPOLLIN | select.EPOLLRDHUP

#: Most parked clients promoted per loop iteration (the epoll is level-triggered:
#: the rest are reported again on the next one).
BATCH = 256

#: A ``ParkedOutput``'s states: in the lot; waiting for its transport; done
#: (promoted, closed or moved).
PARKED, PROMOTING, GONE = 0, 1, 2


class Parkable(Protocol):
    """What a parked output needs from its client (``workers.protocol.ClientProtocol``)."""

    def promote(self, sock: socket.socket, readable: bool) -> None:
        """Give the client a transport over ``sock`` (its ``connection_made`` follows);
        ``readable``: its socket has bytes (or a hang-up) to read."""

    def connection_lost(self, exc: Exception | None) -> None: ...


class Lot:
    """One epoll holding the worker's parked sockets, read by the loop through ``add_reader``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        # By descriptor: a process's descriptors are small and dense, and a list slot is
        # 8 bytes where a dict's entry and its int key are about 60.
        self.parked: list[ParkedOutput | None] = []
        self.count = 0
        loop.add_reader(self.epoll.fileno(), self.ready)

    def __len__(self) -> int:
        return self.count

    def park(self, output: ParkedOutput) -> None:
        fd = output.sock.fileno()
        self.epoll.register(fd, EVENTS)
        parked = self.parked
        if fd >= len(parked):
            parked.extend([None] * (fd + 1 - len(parked)))
        parked[fd] = output
        self.count += 1

    def leave(self, output: ParkedOutput) -> None:
        """Out of the lot; always before its socket is closed or handed on (a descriptor
        closed while registered stays in the epoll if the socket lives on elsewhere)."""
        fd = output.sock.fileno()
        self.epoll.unregister(fd)
        self.parked[fd] = None
        self.count -= 1

    def ready(self) -> None:
        """Promote every parked client with something to read or a hang-up."""
        parked = self.parked
        for fd, _ in self.epoll.poll(0, BATCH):
            output = parked[fd] if fd < len(parked) else None
            if output is not None:
                output.promote(readable=True)

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()


class ParkedOutput:
    """A parked client's output: straight to its socket, until the socket does not take
    a write whole; then what follows waits for the transport (``pending``).

    The same interface as ``workers.output.DirectOutput`` (``send``, ``queued``,
    ``taken``), so ``--sendq`` and the stall check count what waits here too.
    """

    __slots__ = ("sock", "lot", "client", "written", "pending", "state")

    def __init__(self, sock: socket.socket, lot: Lot, client: Parkable) -> None:
        self.sock, self.lot, self.client = sock, lot, client
        self.written = 0
        self.pending: bytearray | None = None  # PROMOTING: bytes for the transport
        self.state = PARKED
        lot.park(self)

    @property
    def parked(self) -> bool:
        return self.state == PARKED

    def send(self, data: bytes) -> None:
        self.written += len(data)
        if self.state == PARKED:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:  # reset by the peer: lost, as a transport would say
                self._gone(exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.promote()
        if self.pending is not None:
            self.pending += data
        # GONE: dropped, as a closed transport drops what is written to it

    def queued(self) -> int:
        return len(self.pending) if self.pending is not None else 0

    def taken(self) -> int:
        unsent = socket_unsent(self.sock) if self.state != GONE else 0
        return self.written - self.queued() - unsent

    def promote(self, readable: bool = False) -> None:
        """Out of the lot, and ask for the client's transport; writes wait for it."""
        if self.state != PARKED:
            return
        self.lot.leave(self)
        self.state = PROMOTING
        self.pending = bytearray()
        self.client.promote(self.sock, readable)

    def handover(self) -> bytes:
        """The transport is there: what waited for it, to write first."""
        pending, self.pending = self.pending, None
        self.state = GONE
        return bytes(pending) if pending else b""

    def finish(self, data: bytes) -> None:
        """Send ``data`` last and close; a client that has sent bytes nobody read gets its
        transport first, to close as ``DirectOutput.finish`` does (the bytes it sent would
        otherwise make the close a reset, and its kernel drop ``data`` unread)."""
        self.send(data)
        if self.state == PARKED:
            if socket_unread(self.sock):
                self.promote()  # ``ClientProtocol.connection_made`` finishes it
            else:
                self._gone(None)
        # PROMOTING: ``ClientProtocol.connection_made`` finishes it

    def release(self) -> None:
        """The socket went to another worker: close this process's descriptor only."""
        self._gone(None)

    def _gone(self, exc: Exception | None) -> None:
        """Closed here: the client hears ``connection_lost`` on the next loop iteration,
        as it would from a transport."""
        if self.state == PARKED:
            self.lot.leave(self)
        self.state = GONE
        self.pending = None
        self.sock.close()
        self.lot.loop.call_soon(self.client.connection_lost, exc)
