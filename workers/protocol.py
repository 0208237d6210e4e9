"""One client connection: bytes from the socket through the codec to actions.

A thin shell (cf. uvicorn's ``h11_impl.py``): framing and parsing are the pure
``ipc`` modules, pairing decisions are the matchmaker's; this class only keeps
the connection's local view and the order of its lines.

Order is the rule here. A client has at most one request waiting for the
matchmaker (its id, a ``GET``, a ``CONNECT``); lines that arrive meanwhile wait
in the decoder, undecoded, and reading pauses, so replies come in the order of
the lines that caused them, and a line sent after ``CONNECT`` is handled as a
message once the session has started.

Backpressure is the other rule: the server takes a client's lines only while
what they produce has somewhere to go. Reading pauses while the client's own
output is backed up (it does not read its replies), while its partner's output
on this worker is backed up, or while too many of its lines to a partner on
another worker are unconfirmed (``--sendq``; see ``held``). TCP then pushes
back on the sender; nothing it sent is dropped, and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from ipc import commands as c
from ipc import messages as m
from ipc.dialects import Dialect, LineDialect
from ipc.errors import ErrorCode, ProtocolError
from workers.moving import Moving
from workers.output import DirectOutput, Output, PacedOutput, unread_input
from workers.unconfirmed import Unconfirmed

if TYPE_CHECKING:
    from workers.hub import Hub

log = logging.getLogger("workers.protocol")

#: What ``ClientProtocol.held`` says: take the next line; wait for this tick's
#: output to be written (reading goes on); wait for a reader (reading pauses).
GO, NEXT_TICK, BACKED_UP = 0, 1, 2

#: Lines decoded at once. Checking ``held`` once per batch instead of once per
#: line keeps a stream's per-line cost where it was; a batch of lines at most
#: ``--max-line`` each is what a held client may overshoot by.
BATCH = 64


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
        "ready",
        "eof",
        "pending",
        "paused",
        "closed",
        "leaving",
        "session",
        "peer",
        "peer_worker",
        "peer_key",
        "out",
        "writing_paused",
        "local_peer",
        "ending",
        "last_seen",
        "request",
        "sent",
        "recv_seq",
        "swallow",
        "last_session",
        "unacked",
        "progress",
        "stalled_since",
        "since",
        "crossing",
    )

    def __init__(self, hub: Hub, key: int, dialect: Dialect = LineDialect) -> None:
        self.hub = hub
        self.key = key
        self.dialect = dialect
        self.cid = 0  # 0 until WELCOME
        self.transport: asyncio.Transport | None = None
        self.decoder = dialect.decoder(hub.config.max_line)
        self.ready: deque[str | ErrorCode] = deque()  # decoded, not yet handled (a batch)
        self.output: Output | None = None
        self.eof = False  # the client closed its sending side: #CLOSE# after its last line
        self.pending = True  # waiting for WELCOME
        self.paused = False
        self.closed = False
        self.leaving = False  # sent #CLOSE# (or EOF): input is ignored until BYE
        self.session = 0  # 0 while FREE
        self.peer = 0
        self.peer_worker = 0
        self.peer_key = 0
        # written to the socket once per loop tick; one buffer, not one object per line
        self.out = bytearray()
        self.writing_paused = False  # the output is over its high-water mark (Hub.high)
        self.local_peer: ClientProtocol | None = None  # the partner, when on this worker
        # The session a #GOODBYE# or #CLOSE# is ending: until the matchmaker answers,
        # its unconfirmed lines (``sent``) are kept, to send again to a new matchmaker.
        self.ending = 0
        self.last_seen = hub.loop.time()  # for --idle-timeout
        self.request: m.ToMatchmakerRequest | None = m.Register(key)  # the one awaiting an answer
        self.sent: Unconfirmed | None = None  # in a session across workers
        self.recv_seq = 0  # the partner's last line written, in a session across workers
        self.swallow = 0  # answers already given early (a goodbye crossed by the partner's)
        self.last_session = 0  # the newest session this client has heard of
        self.unacked = 0  # bytes of the partner's lines written here since the last Received
        self.progress = 0  # bytes the socket had taken when the output was last seen moving
        self.stalled_since = 0.0  # since when the backed-up output has not moved
        self.since = 0  # when the matchmaker gave it its id (Welcome.since); it keeps it
        self.crossing = False  # its next line may be a CONNECT that crossed its partner's

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
        if self.swallow or self.eof:  # an answer owed to a crossed goodbye is on its way here
            return False
        if self.dialect.paced or transport.is_closing() or transport.get_write_buffer_size():
            return False
        return not self.pending or isinstance(self.request, m.Connect)

    def export(self, session: int) -> Moving:
        """What the next worker needs to go on where this one stops (see ``arriving``).

        The decoded lines and the decoder carry every byte read and not yet handled.
        """
        idle = self.hub.loop.time() - self.last_seen
        return Moving(session, self.cid, self.request, tuple(self.ready), self.decoder, idle,
                      bytes(self.out), self.last_session, self.since)  # fmt: skip

    @classmethod
    def arriving(cls, hub: Hub, key: int, state: Moving) -> ClientProtocol:
        """The protocol for a client another worker sent here, as ``export`` left it.

        Its request is its own here too, under its new key.
        """
        self = cls(hub, key)
        request = state.request
        if request is not None:
            request = request._replace(key=key)
        self.cid, self.request, self.pending = state.cid, request, request is not None
        self.ready.extend(state.ready)
        self.decoder = state.decoder
        self.last_seen -= state.idle
        self.out += state.out
        self.last_session = state.last_session
        self.since = state.since
        return self

    def moved(self) -> None:
        """The socket is on its way to another worker: let go of it without a word."""
        self.closed = True
        self.ready.clear()
        self.out = bytearray()
        if self.transport is not None:
            self.transport.abort()  # closes this process's descriptor only; no FIN, no RST

    # ---- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, but behave as one
        self.transport = tcp = cast(asyncio.Transport, transport)
        hub = self.hub
        if self.dialect.paced:
            self.output = PacedOutput(
                tcp, hub.loop, hub.linger, hub.config.legacy_pace, self, hub.high, hub.low
            )
        else:
            self.output = DirectOutput(tcp, hub.loop, hub.linger, hub.high, hub.low)
        hub.attach(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.hub.loop.time()
        if self.closed or self.leaving:
            return
        self.decoder.receive(data)
        self.drain()

    def eof_received(self) -> bool:
        if self.closed:  # closed with its input unread: it has read our last line
            return False
        if self.leaving:
            return True
        self.eof = True
        self.drain()
        return True  # keep the socket open for the replies still to come

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.hub.detach(self)
        self.hub.lost(self)

    def pause_writing(self) -> None:
        """The output is over its high-water mark (``Hub.high``): stop adding to it."""
        if not self.writing_paused:
            self.writing_paused = True
            self.progress = self.output.taken() if self.output is not None else 0
            self.stalled_since = self.hub.loop.time()
            self.hub.congested.add(self)

    def resume_writing(self) -> None:
        """The client has read most of its output: whoever waited on it goes on."""
        if self.writing_paused:
            self.writing_paused = False
            self.hub.congested.discard(self)
            self.hub.drained(self)

    # ---- lines in --------------------------------------------------------------------

    def held(self) -> int:
        """Whether this client's next line must wait: what it makes has nowhere to go yet.

        ``BACKED_UP`` (its reading pauses): its own output is backed up (its
        replies, or its partner's lines, wait unread), its partner here is backed
        up, or more of its lines to a partner on another worker than the window
        allows wait for confirmation. ``NEXT_TICK``: this tick's output, its own
        or its partner's here, is full; it goes on once that has been written.
        """
        hub = self.hub
        if self.writing_paused:
            return BACKED_UP
        sent = self.sent
        if sent is not None:
            if self.session and sent.size > hub.window:
                return BACKED_UP
        elif (peer := self.local_peer) is not None:
            if peer.writing_paused:
                return BACKED_UP
            if len(peer.out) > hub.tick:
                return NEXT_TICK
        return NEXT_TICK if len(self.out) > hub.tick else GO

    def drain(self) -> None:
        """Handle waiting lines until one needs the matchmaker's answer or must be held.

        Lines are decoded ``BATCH`` at a time, and ``held`` is asked once a batch:
        a held client overshoots by a batch at most.
        """
        ready = self.ready
        decoder = self.decoder
        held = GO
        while not self.pending and not self.closed:
            if not ready:
                held = self.held()
                if held:
                    break
                ready.extend(decoder.take(BATCH))
                if not ready:
                    if self.eof:
                        self.eof = False
                        self.leave()
                    break
            event = ready.popleft()
            try:
                self.handle(event)
            except Exception:
                log.exception("bug while handling a line from client %s; closing it", self.cid)
                self.close(b"")
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        if held:  # a full tick pauses too once a read's worth of lines waits behind it
            stop = held == BACKED_UP or decoder.pending > self.hub.tick
        else:
            stop = self.pending and bool(ready or decoder.pending or self.eof)
        if stop and not self.paused:
            self.paused = True
            transport.pause_reading()
        elif not stop and self.paused:
            self.paused = False
            # idle means the client sent nothing, not that the server did not read
            self.last_seen = self.hub.loop.time()
            transport.resume_reading()

    def resume(self) -> None:
        """Go on with lines held back (by a full tick, a backed-up output, the window)."""
        if not self.closed and (self.paused or self.ready or self.decoder.pending):
            self.drain()

    def handle(self, event: str | ErrorCode) -> None:
        if isinstance(event, str):
            if self.session:
                self.on_busy_line(event)
            else:
                self.on_free_line(event)
        else:
            self.write(self.dialect.error(event))

    def on_busy_line(self, line: str) -> None:
        if self.crossing and self.crossed(line):
            return
        command = c.parse_busy(line)
        if isinstance(command, c.Message):
            self.hub.relay(self, command.text)
        elif isinstance(command, c.Goodbye):
            session, self.session = self.session, 0  # nothing more is relayed either way
            self.ending = session
            self.local_peer = None
            self.ask(m.Goodbye(self.cid, session, self.peer, self.key))
        else:
            self.leave()

    def on_free_line(self, line: str) -> None:
        try:
            command = c.parse_free(line)
        except ProtocolError as exc:
            self.write(self.dialect.error(exc.code, exc.detail))
            return
        if isinstance(command, c.Get):
            self.ask(m.Get(self.cid, command.free_only, self.key))
        elif isinstance(command, c.Connect):
            # stamped as it is read: a client given that id after now is not the one named
            self.ask(m.Connect(self.cid, command.target, self.key, time.monotonic_ns()))
        elif isinstance(command, c.Ping):
            self.write(self.dialect.pong())
        elif isinstance(command, c.Help):
            self.write(self.dialect.help())
        elif isinstance(command, c.Close):
            self.leave()
        # None: a blank line, ignored

    def crossed(self, line: str) -> bool:
        """Whether ``line`` is this client's ``CONNECT`` to the partner that just paired it.

        Asked only of the first line after another client's ``CONNECT`` paired
        this one while nothing of its own waited for an answer: such a
        ``CONNECT`` crossed the partner's, and had it been read a moment
        earlier the matchmaker would have answered it ``ERROR TALKING``. It is
        answered so here, and not relayed. Any other line is chat.
        """
        self.crossing = False
        try:
            command = c.parse_free(line)
        except ProtocolError:
            return False
        if not isinstance(command, c.Connect) or command.target != self.peer:
            return False
        self.write(self.dialect.error(ErrorCode.TALKING, str(self.peer)))
        return True

    def leave(self) -> None:
        """``#CLOSE#`` or EOF: ``BYE`` comes once the matchmaker has freed the id."""
        if self.session:
            self.ending = self.session
        self.session = 0
        self.local_peer = None
        self.leaving = True
        self.eof = False
        self.ready.clear()  # what follows #CLOSE# is never handled
        self.ask(m.Drop(self.cid, self.key, answer=True))
        self.cid = 0  # dropped already: detaching must not drop it again

    def ask(self, request: m.ToMatchmakerRequest) -> None:
        self.pending = True
        self.request = request
        self.hub.to_matchmaker(request)

    # ---- what the matchmaker says -------------------------------------------------

    def welcome(self, cid: int, since: int) -> None:
        self.cid, self.since = cid, since
        if self.dialect.welcomes:
            self.write(self.dialect.welcome(cid))
        self.answered()

    def answered(self) -> None:
        self.pending = False
        self.request = None
        if self.ending:  # the session is over for good: its lines need no keeping
            self.ending = 0
            self.sent = None
        self.drain()

    def paired(self, msg: m.Paired, local_peer: ClientProtocol | None) -> None:
        self.session, self.peer = msg.session, msg.peer
        self.last_session = msg.session
        self.peer_worker, self.peer_key = msg.peer_worker, msg.peer_key
        self.local_peer = local_peer
        across = msg.peer_worker != self.hub.index
        self.sent = Unconfirmed() if across else None
        self.recv_seq = 0
        self.unacked = 0
        self.crossing = not msg.requested and not self.pending
        self.write(self.dialect.connected(msg.peer, msg.requested))
        if msg.requested:
            self.answered()

    def ended(self, session: int, peer: int) -> None:
        if self.session == session:
            self.session = 0
            self.sent = None
            self.local_peer = None
            self.write(self.dialect.ended(peer))
            self.resume()  # it may have been held for a partner that is gone now
        elif isinstance(self.request, m.Goodbye) and self.request.session == session:
            # Both ends said goodbye at once and the partner's came first: this is our
            # ENDED. Answer now, before anything that follows (a new CONNECTED), and let
            # the matchmaker's own answer to our stale goodbye pass unseen.
            self.write(self.dialect.ended(peer))
            self.swallow += 1
            self.answered()

    def resend(self) -> tuple[m.ClientState | None, list[m.Relay]]:
        """What a new matchmaker must hear of this client: its state, and lines it may have lost.

        A client whose ``#GOODBYE#`` or ``#CLOSE#`` is not answered yet still
        counts as in the session it is ending, so that the lines it sent before
        are delivered before the end.
        """
        request = self.request
        cid = request.cid if self.leaving and isinstance(request, m.Drop) else self.cid
        session = self.session or self.ending
        if not cid or (self.leaving and not session):
            return None, []
        state = m.ClientState(self.key, cid, session, self.peer if session else 0,
                              self.last_session, self.since)  # fmt: skip
        sent = self.sent
        if sent is None or not session:
            return state, []
        return state, [m.Relay(cid, session, text, seq) for seq, text in sent]

    # ---- lines out ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            self.hub.mark_dirty(self)
        self.out += data

    def flush(self) -> None:
        """Write what this tick produced in one call; cut the client if it cannot keep up."""
        out, self.out = self.out, bytearray()
        output = self.output
        if self.closed or output is None or not out:
            return
        size = len(out)
        output.send(bytes(out))
        if output.queued() > self.hub.config.sendq:
            log.info(
                "client %s: send queue over %d bytes; cutting it", self.cid, self.hub.config.sendq
            )
            self.close(self.dialect.error(ErrorCode.SLOW_CONSUMER))
        elif size > self.hub.tick and not self.writing_paused:
            self.hub.drained(self)  # it held lines back, and the socket took it all

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

    def close(self, last: bytes) -> None:
        """Send what is queued and ``last``, close, and tell the matchmaker the client is gone.

        A client that does not read would keep a closing socket (and its buffer)
        forever, so one that still has bytes waiting after ``linger`` seconds is reset.
        """
        if self.closed:
            return
        self.closed = True
        self.hub.detach(self)
        if self.output is not None:
            self.out += last
            data, self.out = bytes(self.out), bytearray()
            if isinstance(self.output, DirectOutput) and self.transport is not None:
                unread = (
                    self.paused
                    or bool(self.ready)
                    or self.decoder.pending > 0
                    or unread_input(self.transport)
                )
                if unread and self.paused:
                    self.paused = False
                    self.transport.resume_reading()  # to discard it: see data_received
                self.output.finish(data, unread)
            else:
                self.output.finish(data)
