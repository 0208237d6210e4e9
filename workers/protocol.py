"""One client connection: bytes from the socket through the codec to actions.

A thin shell (cf. uvicorn's ``h11_impl.py``): framing and parsing are the pure
``ipc`` modules, pairing decisions are the matchmaker's; this class only keeps
the connection's local view and the order of its lines.

Order is the rule here. A client has at most one request waiting for the
matchmaker (its id, a ``GET``, a ``CONNECT``); lines that arrive meanwhile wait
in ``backlog`` and reading pauses, so replies come in the order of the lines
that caused them, and a line sent after ``CONNECT`` is handled as a message once
the session has started.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from ipc import commands as c
from ipc import messages as m
from ipc.codec import Event
from ipc.dialects import Dialect, LineDialect
from ipc.errors import ErrorCode, ProtocolError
from workers.output import DirectOutput, Output, PacedOutput
from workers.unconfirmed import Unconfirmed

if TYPE_CHECKING:
    from workers.hub import Hub

log = logging.getLogger("workers.protocol")

#: Put into ``backlog`` when the client closes its sending side: counts as ``#CLOSE#``
#: once every line before it has been handled.
EOF_MARK = object()


class ClientProtocol(asyncio.Protocol):
    """The worker's side of one client."""

    __slots__ = (
        "hub",
        "key",
        "dialect",
        "output",
        "cid",
        "transport",
        "decoder",
        "backlog",
        "pending",
        "paused",
        "closed",
        "leaving",
        "session",
        "peer",
        "peer_worker",
        "peer_key",
        "out",
        "last_seen",
        "request",
        "sent",
        "recv_seq",
        "swallow",
        "last_session",
    )

    def __init__(self, hub: Hub, key: int, dialect: Dialect = LineDialect) -> None:
        self.hub = hub
        self.key = key
        self.dialect = dialect
        self.cid = 0  # 0 until WELCOME
        self.transport: asyncio.Transport | None = None
        self.decoder = dialect.decoder(hub.config.max_line)
        self.output: Output | None = None
        self.backlog: deque[Event | object] = deque()
        self.pending = True  # waiting for WELCOME
        self.paused = False
        self.closed = False
        self.leaving = False  # sent #CLOSE# (or EOF): input is ignored until BYE
        self.session = 0  # 0 while FREE
        self.peer = 0
        self.peer_worker = 0
        self.peer_key = 0
        self.out: list[bytes] = []  # written to the socket once per loop tick
        self.last_seen = hub.loop.time()  # for --idle-timeout
        self.request: m.ToMatchmakerRequest | None = m.Register(key)  # the one awaiting an answer
        self.sent: Unconfirmed | None = None  # in a session across workers
        self.recv_seq = 0  # the partner's last line written, in a session across workers
        self.swallow = 0  # answers already given early (a goodbye crossed by the partner's)
        self.last_session = 0  # the newest session this client has heard of

    # ---- moving to another worker -------------------------------------------------

    def movable(self, cid: int) -> bool:
        """Can this client's socket go to another worker now, with nothing lost or reordered?

        Only a line client whose every reply has left (the socket's buffer is
        empty) and that waits for nothing but, at most, the ``CONNECT`` the move
        answers; a client that has half-closed, is leaving, or still has an
        answer to skip stays.
        """
        transport = self.transport
        if self.closed or self.leaving or self.cid != cid or self.session or transport is None:
            return False
        if self.swallow:  # an answer owed to a crossed goodbye is still on its way here
            return False
        if self.dialect.paced or transport.is_closing() or transport.get_write_buffer_size():
            return False
        if self.pending:
            if not isinstance(self.request, m.Connect):
                return False
        elif self.backlog:
            return False
        return EOF_MARK not in self.backlog

    def export(self) -> tuple[Any, ...]:
        """What the next worker needs to go on where this one stops (see ``arriving``)."""
        idle = self.hub.loop.time() - self.last_seen
        out = b"".join(self.out)
        return (self.cid, self.request, list(self.backlog), self.decoder, idle, out,
                self.last_session)  # fmt: skip

    @classmethod
    def arriving(cls, hub: Hub, key: int, state: tuple[Any, ...]) -> ClientProtocol:
        """The protocol for a client another worker sent here, as ``export`` left it."""
        cid, request, backlog, decoder, idle, out, last_session = state
        self = cls(hub, key)
        self.cid, self.request, self.pending = cid, request, request is not None
        self.backlog.extend(backlog)
        self.decoder = decoder
        self.last_seen -= idle
        if out:
            self.out.append(out)
        self.last_session = last_session
        return self

    def moved(self) -> None:
        """The socket is on its way to another worker: let go of it without a word."""
        self.closed = True
        self.backlog.clear()
        self.out = []
        if self.transport is not None:
            self.transport.abort()  # closes this process's descriptor only; no FIN, no RST

    # ---- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, but behave as one
        self.transport = tcp = cast(asyncio.Transport, transport)
        hub = self.hub
        if self.dialect.paced:
            self.output = PacedOutput(tcp, hub.loop, hub.linger, hub.config.legacy_pace)
        else:
            self.output = DirectOutput(tcp, hub.loop, hub.linger)
        hub.attach(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.hub.loop.time()
        if self.closed or self.leaving:
            return
        self.backlog.extend(self.decoder.feed(data))
        self.drain()

    def eof_received(self) -> bool:
        if self.leaving:
            return True
        self.backlog.append(EOF_MARK)
        self.drain()
        return True  # keep the socket open for the replies still to come

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.backlog.clear()
            self.hub.detach(self)
        self.hub.lost(self)

    # ---- lines in --------------------------------------------------------------------

    def drain(self) -> None:
        """Handle waiting lines until one needs the matchmaker's answer."""
        backlog = self.backlog
        while backlog and not self.pending and not self.closed:
            event = backlog.popleft()
            try:
                self.handle(event)
            except Exception:
                log.exception("bug while handling a line from client %s; closing it", self.cid)
                self.close(b"")
        transport = self.transport
        if transport is None or self.closed:
            return
        if transport.is_closing():
            return
        if backlog and not self.paused:
            self.paused = True
            transport.pause_reading()
        elif not backlog and self.paused:
            self.paused = False
            transport.resume_reading()

    def handle(self, event: Event | object) -> None:
        if isinstance(event, str):
            if self.session:
                self.on_busy_line(event)
            else:
                self.on_free_line(event)
        elif isinstance(event, ErrorCode):
            self.write(self.dialect.error(event))
        else:  # EOF_MARK
            self.leave()

    def on_busy_line(self, line: str) -> None:
        command = c.parse_busy(line)
        if isinstance(command, c.Message):
            self.hub.relay(self, command.text)
        elif isinstance(command, c.Goodbye):
            session, self.session = self.session, 0  # nothing more is relayed either way
            self.sent = None
            self.ask(m.Goodbye(self.cid, session, self.peer))
        else:
            self.leave()

    def on_free_line(self, line: str) -> None:
        try:
            command = c.parse_free(line)
        except ProtocolError as exc:
            self.write(self.dialect.error(exc.code, exc.detail))
            return
        if isinstance(command, c.Get):
            self.ask(m.Get(self.cid, command.free_only))
        elif isinstance(command, c.Connect):
            self.ask(m.Connect(self.cid, command.target))
        elif isinstance(command, c.Ping):
            self.write(self.dialect.pong())
        elif isinstance(command, c.Help):
            self.write(self.dialect.help())
        elif isinstance(command, c.Close):
            self.leave()
        # None: a blank line, ignored

    def leave(self) -> None:
        """``#CLOSE#`` or EOF: ``BYE`` comes once the matchmaker has freed the id."""
        self.session = 0
        self.sent = None
        self.leaving = True
        self.backlog.clear()
        self.ask(m.Drop(self.cid, answer=True, key=self.key))
        self.cid = 0  # dropped already: detaching must not drop it again

    def ask(self, request: m.ToMatchmakerRequest) -> None:
        self.pending = True
        self.request = request
        self.hub.to_matchmaker(request)

    # ---- what the matchmaker says -------------------------------------------------

    def welcome(self, cid: int) -> None:
        self.cid = cid
        if self.dialect.welcomes:
            self.write(self.dialect.welcome(cid))
        self.answered()

    def answered(self) -> None:
        self.pending = False
        self.request = None
        self.drain()

    def paired(self, msg: m.Paired) -> None:
        self.session, self.peer = msg.session, msg.peer
        self.last_session = msg.session
        self.peer_worker, self.peer_key = msg.peer_worker, msg.peer_key
        across = msg.peer_worker != self.hub.index
        self.sent = Unconfirmed(self.hub.config.sendq) if across else None
        self.recv_seq = 0
        self.write(self.dialect.connected(msg.peer, msg.requested))
        if msg.requested:
            self.answered()

    def ended(self, session: int, peer: int) -> None:
        if self.session == session:
            self.session = 0
            self.sent = None
            self.write(self.dialect.ended(peer))
        elif isinstance(self.request, m.Goodbye) and self.request.session == session:
            # Both ends said goodbye at once and the partner's came first: this is our
            # ENDED. Answer now, before anything that follows (a new CONNECTED), and let
            # the matchmaker's own answer to our stale goodbye pass unseen.
            self.write(self.dialect.ended(peer))
            self.swallow += 1
            self.answered()

    # ---- lines out ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            self.hub.mark_dirty(self)
        self.out.append(data)

    def flush(self) -> None:
        """Write what this tick produced in one call; cut the client if it cannot keep up."""
        out, self.out = self.out, []
        output = self.output
        if self.closed or output is None or not out:
            return
        output.send(b"".join(out) if len(out) > 1 else out[0])
        if output.queued() > self.hub.config.sendq:
            log.info(
                "client %s: send queue over %d bytes; cutting it", self.cid, self.hub.config.sendq
            )
            self.close(self.dialect.error(ErrorCode.SLOW_CONSUMER))

    def close(self, last: bytes) -> None:
        """Send what is queued and ``last``, close, and tell the matchmaker the client is gone.

        A client that does not read would keep a closing socket (and its buffer)
        forever, so one that still has bytes waiting after ``linger`` seconds is reset.
        """
        if self.closed:
            return
        self.closed = True
        self.backlog.clear()
        self.hub.detach(self)
        if self.output is not None:
            self.out.append(last)
            out, self.out = self.out, []
            self.output.finish(b"".join(out))
