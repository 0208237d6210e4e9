"""One client's socket: asyncio's callbacks in, a ``Connection``'s effects out.

The connection's rules live in ``workers.connection`` (the shape of uvicorn's
``H11Protocol`` around h11's ``Connection``). This class only carries between
that core and the transport: bytes read, EOF and write pressure go in; the
bytes it made go out once per loop tick, reading pauses or resumes as it says
(for a client over its budget, until a timer says the budget has room again),
and the socket closes with the last words (lingering for a client that reads
slowly, and cutting one that stops reading).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Protocol, cast

from ipc import messages as m
from ipc.counts import COUNTS
from matchmaker.drops import Reason, address, dropped, peer_of
from wire.dialects import LINE, Dialect
from wire.errors import ErrorCode
from wire.legacy import wrong_port
from wire.replies import Error
from workers.connection import FAILED, READ, WAIT, WRONG_PORT, Connection
from workers.moving import Moving
from workers.output import DirectOutput, Output, PacedOutput, unread_input
from workers.parking import Lot, ParkedOutput

if TYPE_CHECKING:
    from matchmaker.config import Config
    from workers.connection import Limits

log = logging.getLogger("workers.protocol")


class Host(Protocol):
    """What a client's socket needs from the worker that serves it (``workers.hub.Hub``)."""

    loop: asyncio.AbstractEventLoop
    config: Config
    limits: Limits
    congested: set[ClientProtocol]

    def attach(self, client: ClientProtocol) -> None: ...
    def detach(self, client: ClientProtocol) -> None: ...
    def lost(self, client: ClientProtocol) -> None: ...
    def promote(self, client: ClientProtocol, sock: socket.socket) -> None: ...
    def drained(self, client: ClientProtocol) -> None: ...
    def mark_dirty(self, client: ClientProtocol) -> None: ...
    def to_matchmaker(self, message: m.ToMatchmaker) -> None: ...


class ClientProtocol(asyncio.Protocol):
    """The transport glue of one client; the client itself is ``core``."""

    __slots__ = (
        "host", "core", "transport", "output", "paused", "progress", "stalled_since", "wake",
        "pinned", "woke",
    )  # fmt: skip

    def __init__(
        self,
        host: Host,
        key: int,
        dialect: Dialect = LINE,
        state: Moving | None = None,
        pinned: bool = False,
    ) -> None:
        self.host = host
        #: its socket cannot go to another worker: a TLS session lives in this process
        self.pinned = pinned
        now = host.loop.time()
        if state is None:
            self.core = Connection(key, dialect, host.limits, self, now)
            if pinned:  # its id is asked for as one that cannot move (a new matchmaker too)
                self.core.request = m.Register(key, pinned=True)
        else:  # moved here from another worker: it goes on as it left the other
            self.core = Connection.arriving(key, state, dialect, host.limits, self, now)
        self.transport: asyncio.Transport | None = None
        self.output: Output | ParkedOutput | None = None  # None until it is served
        self.paused = False  # reading is paused
        self.progress = 0  # bytes the socket had taken when the output was last seen moving
        self.stalled_since = 0.0  # since when the backed-up output has not moved
        self.wake: asyncio.TimerHandle | None = None  # over budget: when to read on
        # parked: when its socket was seen readable, the stamp of what its first read holds
        self.woke = 0

    @classmethod
    def arriving(cls, host: Host, key: int, state: Moving) -> ClientProtocol:
        """The glue for a client another worker sent here (only line clients move)."""
        return cls(host, key, LINE, state)

    @property
    def key(self) -> int:
        return self.core.key

    # ---- the core's effects ---------------------------------------------------------------

    def send(self, message: m.ToMatchmaker) -> None:
        self.host.to_matchmaker(message)

    def wrote(self) -> None:
        self.host.mark_dirty(self)

    def stamp(self) -> int:
        """A parked client's first read is stamped when the lot saw its bytes, as any
        other read is as the loop sees them: a ``CONNECT`` sent before its target's id
        changed hands must not be read as one sent after, for the time its transport took."""
        return self.woke or time.monotonic_ns()

    # ---- asyncio callbacks --------------------------------------------------------------

    def park(self, lot: Lot, sock: socket.socket) -> None:
        """Serve the client without a transport until it needs one (``workers.parking``)."""
        self.output = ParkedOutput(sock, lot, self)
        self.host.attach(self)

    def promote(self, sock: socket.socket, readable: bool) -> None:
        """A parked client needs its transport: ``connection_made`` follows."""
        if readable:
            self.woke = time.monotonic_ns()
        self.host.promote(self, sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, but behave as one
        self.transport = tcp = cast(asyncio.Transport, transport)
        host = self.host
        config, limits = host.config, host.limits
        parked = self.output
        if self.core.dialect.paced:
            self.output = PacedOutput(tcp, host.loop, config.linger, config.legacy_pace, self,
                                      limits.high, limits.low)  # fmt: skip
        else:
            self.output = output = DirectOutput(tcp, host.loop, config.linger, limits.high,
                                                limits.low)  # fmt: skip
            if isinstance(parked, ParkedOutput):  # promoted: served (attached) already
                data = parked.handover()
                output.written = parked.written - len(data)
                if self.core.closed:  # closed while its transport was on the way
                    output.finish(data, unread_input(tcp))
                elif data:
                    output.send(data)
                return
        host.attach(self)

    def data_received(self, data: bytes) -> None:
        core = self.core
        now = self.host.loop.time()
        if not self.paused and core.relay_read(data, now):
            self.woke = 0
            return
        core.receive(data, now)
        if not (core.closed or core.leaving):
            self.drain()
        self.woke = 0

    def eof_received(self) -> bool:
        core = self.core
        keep_open = core.receive_eof()
        if core.eof:
            self.drain()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.unwake()
        if not self.core.closed:
            self.core.close()
            self.host.detach(self)
        self.host.lost(self)

    def pause_writing(self) -> None:
        """The output is over its high-water mark: stop adding to it."""
        if self.core.pause_writing():
            self.progress = self.output.taken() if self.output is not None else 0
            self.stalled_since = self.host.loop.time()
            self.host.congested.add(self)

    def resume_writing(self) -> None:
        """The client has read most of its output: whoever waited on it goes on."""
        if self.core.resume_writing():
            self.host.congested.discard(self)
            self.host.drained(self)

    # ---- reading ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Let the core handle what it can, and pause or resume reading as it says."""
        core = self.core
        loop = self.host.loop
        verdict = core.drain(loop.time())
        if verdict == FAILED:
            self.close(b"", Reason.ERROR, "a bug while handling its line")
            return
        if verdict == WRONG_PORT:
            port = self.host.config.legacy_port
            log.info(
                "client %s sent a legacy record to the line port; told it the legacy port "
                "(%s) and closed it",
                core.cid or "without an id yet",
                "off" if port is None else port,
            )
            self.close(wrong_port(port))
            return
        transport = self.transport
        if transport is None or core.closed or transport.is_closing():
            return
        if verdict == WAIT and self.wake is None and core.budget is not None:
            self.wake = loop.call_later(core.budget.due(loop.time()), self.woken)
        if verdict != READ:
            if not self.paused:
                self.paused = True
                transport.pause_reading()
        elif self.paused:
            self.paused = False
            core.reading_resumed(self.host.loop.time())
            transport.resume_reading()

    def resume(self) -> None:
        """Go on with lines held back (by a full tick, a backed-up output, the window)."""
        if not self.core.closed and (self.paused or self.core.has_input()):
            self.drain()

    def woken(self) -> None:
        """The budget has room again: go on with the lines that waited for it."""
        self.wake = None
        self.resume()

    def unwake(self) -> None:
        if self.wake is not None:
            self.wake.cancel()
            self.wake = None

    def idle(self, now: float, timeout: float) -> bool:
        """Sent nothing for ``timeout`` seconds. A client whose reading is paused, or that
        waits for an answer, may have sent something nobody read yet: it is not idle."""
        core = self.core
        if self.paused or core.request is not None:
            return False
        return now - core.last_seen > timeout

    # ---- moving to another worker ---------------------------------------------------------

    def movable(self, cid: int) -> bool:
        """Can this client's socket go to another worker now (``Connection.movable``), with
        every reply already out of the socket's buffer? A pinned (TLS) one never can; a
        parked one has had every write taken whole, and one being promoted waits."""
        if self.pinned or not self.core.movable(cid):
            return False
        transport = self.transport
        if transport is None:
            return isinstance(self.output, ParkedOutput) and self.output.parked
        return not (transport.is_closing() or transport.get_write_buffer_size())

    def fileno(self) -> int:
        """The socket's descriptor, to pass to another worker; -1 if there is none."""
        transport = self.transport
        if transport is None:
            parked = self.output
            return parked.sock.fileno() if isinstance(parked, ParkedOutput) else -1
        sock = transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else -1

    def export(self, session: int) -> Moving:
        return self.core.export(session, self.host.loop.time())

    def moved(self) -> None:
        """The socket is on its way to another worker: let go of it without a word."""
        self.core.moved()
        self.unwake()
        if self.transport is not None:
            self.transport.abort()  # closes this process's descriptor only; no FIN, no RST
        elif isinstance(self.output, ParkedOutput):
            self.output.release()  # the same, without a transport

    # ---- lines out -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what this tick produced in one call; cut the client if it cannot keep up."""
        out = self.core.take_output()
        if self.core.closed or self.output is None or not out:
            return
        self.write_now(bytes(out))

    def write_now(self, data: bytes) -> None:
        """Write ``data`` to the socket; cut the client if it cannot keep up."""
        output = self.output
        if output is None:  # not connected yet: it waits for the tick's flush
            self.core.write(data)
            return
        size = len(data)
        output.send(data)
        sendq = self.host.config.sendq
        tick = self.host.limits.tick
        # One write past a tick is a client's own answer (a GET's CLIENTS line, which
        # grows with the server: 1.2 MB at 100,000 clients): it may wait on top of
        # --sendq once; a client that asks again without reading it is cut.
        if output.queued() > sendq + (size if size > tick else 0):
            COUNTS.errors[ErrorCode.SLOW_CONSUMER.value] += 1
            last = self.core.dialect.render(Error(ErrorCode.SLOW_CONSUMER))
            self.close(last, Reason.SENDQ, f"send queue over --sendq {sendq} bytes")
        elif size > tick and not self.core.writing_paused:
            self.host.drained(self)  # it held lines back, and the socket took it all

    def peer(self) -> str:
        """The client's address, for the log (``?`` once unknown)."""
        transport = self.transport
        if transport is not None:
            return address(transport.get_extra_info("peername"))
        return peer_of(self.output.sock) if isinstance(self.output, ParkedOutput) else "?"

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether the backed-up output has not moved for ``timeout`` seconds."""
        output = self.output
        if output is None:
            return False
        taken = output.taken()
        if taken != self.progress:
            self.progress, self.stalled_since = taken, now
            return False
        return now - self.stalled_since > timeout

    def close(
        self, last: bytes, reason: Reason | None = None, detail: str = "", cid: int = 0
    ) -> None:
        """Send what is queued and ``last``, close, and tell the matchmaker the client is gone.

        With a ``reason`` the server closes it on its own: that is logged, once
        (``matchmaker.drops``); ``cid`` is its id if the core no longer says.
        A client that does not read would keep a closing socket (and its buffer)
        forever, so one that still has bytes waiting after ``--linger`` is reset.
        """
        core = self.core
        if core.closed:
            return
        if reason is not None:
            dropped(reason, cid or core.cid, self.peer(), detail)
        core.close()
        self.unwake()
        self.host.detach(self)
        if self.output is None:
            return
        data = bytes(core.take_output() + last)
        transport = self.transport
        if isinstance(self.output, ParkedOutput):
            self.output.finish(data)
        elif isinstance(self.output, DirectOutput) and transport is not None:
            unread = self.paused or core.has_input() or unread_input(transport)
            if unread and self.paused:
                self.paused = False
                transport.resume_reading()  # to discard it: see Connection.receive
            self.output.finish(data, unread)
        else:
            self.output.finish(data)
