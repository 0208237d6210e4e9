"""One client as the worker sees it, without I/O: its state and the rules of its lines.

The rules of a connection live here, in the shape of h11's ``Connection``
under uvicorn's ``H11Protocol``: which request waits for the matchmaker, which
lines wait behind it, what a line means while FREE, BUSY or leaving, which
lines to a partner on another worker are not yet confirmed, when reading must
pause. It never touches a socket, a loop or a clock. Bytes come in through
``receive``, the matchmaker's messages through the methods named after them,
the time as ``now``. What it makes goes out as bytes gathered in ``out``, as
messages for the matchmaker handed to its ``Effects`` (which also hears that
``out`` has something), and as what ``drain`` returns: read on, pause reading,
or close. ``workers.protocol.ClientProtocol`` carries all of that between a
``Connection`` and its transport; the component tests drive it directly.

Order is the first rule. A client has at most one request waiting for the
matchmaker (its id, a ``GET``, a ``CONNECT``); lines that arrive meanwhile wait
in the decoder, undecoded, and reading pauses, so replies come in the order of
the lines that caused them, and a line sent after ``CONNECT`` is handled as a
message once the session has started.

Backpressure is the second. The server takes a client's lines only while what
they produce has somewhere to go: reading pauses while the client's own output
is backed up (it does not read its replies), while its partner's output on this
worker is backed up, or while too many of its lines to a partner on another
worker are unconfirmed (``held``). TCP then pushes back on the sender; nothing
it sent is dropped, and nobody else waits for it.

Pace is the third. A client has a budget of lines and bytes (``--rate``,
``--burst``; ``wire.budget``): past it, its lines wait undecoded and ``drain``
says ``WAIT``, reading pauses until the budget has room again
(``Budget.due``), and TCP slows the sender to its own pace, again without a
line lost and without keeping anyone else waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from ipc import counts
from ipc import messages as m
from ipc.counts import COUNTS
from wire import commands as c
from wire import replies as r
from wire.budget import Budget, Pace
from wire.dialects import LINE, Decoder, Dialect
from wire.errors import ErrorCode, ProtocolError
from wire.legacy import RECORD, sniff
from workers.moving import Moving
from workers.unconfirmed import Unconfirmed

log = logging.getLogger("workers.connection")

#: What ``Connection.held`` says: take the next line; wait for this tick's
#: output to be written (reading goes on); wait for a reader (reading pauses);
#: wait for the client's budget to have room (reading pauses, ``Budget.due``).
GO, NEXT_TICK, BACKED_UP, OVER_BUDGET = 0, 1, 2, 3

#: What ``Connection.drain`` says to do with the socket's reading: read on, pause,
#: close (a bug), pause until ``budget.due`` (the client is over its budget), or
#: close with a hint (the original client, on the line port: ``Connection.sniff``).
READ, PAUSE, FAILED, WAIT, WRONG_PORT = 0, 1, 2, 3, 4

#: Lines decoded at once. Checking ``held`` once per batch instead of once per
#: line keeps a stream's per-line cost where it was; a batch of lines at most
#: ``--max-line`` each is what a held client may overshoot by.
BATCH = 64

#: A connection's output while it has nothing to write: an empty bytearray is 56 bytes
#: of every idle client; this one is shared.
NOTHING = b""

#: Bytes of output one client's lines may make in one loop tick: one read's
#: worth (asyncio and uvloop read up to 256 KiB at once), so a stream is passed
#: on a read per tick without pausing the socket in between.
TICK_OUTPUT = 1 << 18


@dataclass(frozen=True, slots=True)
class Limits:
    """The flow-control sizes every connection of a worker shares, all from ``--sendq``.

    What one client may add to an output in one loop tick (``tick``) before its
    lines wait for the next; past ``high`` bytes waiting in an output its writers
    are held, until no more than ``low`` are left; a sender may have ``window``
    bytes of lines to another worker unconfirmed. A tick on top of ``high`` is
    half of ``--sendq``, so even a partner that pushes a whole window into an
    output just under it stays under ``--sendq``, and a client's replies and
    unread input together stay within it.
    """

    worker: int  # this worker's index: a partner elsewhere is relayed, with confirmations
    max_line: int
    tick: int
    high: int
    low: int
    window: int
    pace: Pace | None = None  # each client's budget (--rate, --burst); None: unlimited

    @classmethod
    def of(
        cls, worker: int, sendq: int, max_line: int, rate: float = 0.0, burst: int = 1
    ) -> Limits:
        tick = min(sendq // 4, TICK_OUTPUT)
        pace = Pace.of(rate, burst, max_line)
        return cls(worker, max_line, tick, sendq // 2 - tick, sendq // 8, sendq // 4, pace)


class Effects(Protocol):
    """Where a connection's effects go: the transport glue, or a recorder in tests."""

    def send(self, message: m.ToMatchmaker) -> None:
        """A message for the matchmaker."""

    def wrote(self) -> None:
        """``out`` was empty and has bytes now: write them at the end of this tick."""

    def write_now(self, data: bytes) -> None:
        """Bytes for the socket at once (``out`` is empty: nothing of this tick is ahead)."""

    def stamp(self) -> int:
        """Now, on the clock every process of the host shares (``time.monotonic_ns``):
        when a ``CONNECT`` is read. A client given the id it names after that moment is
        not the one it names."""


class Connection:
    """The worker's side of one client, from its first byte to its ``BYE``."""

    __slots__ = (
        "key",
        "dialect",
        "limits",
        "effects",
        "cid",
        "decoder",
        "ready",
        "eof",
        "request",
        "closed",
        "leaving",
        "session",
        "peer",
        "local_peer",
        "out",
        "writing_paused",
        "ending",
        "last_seen",
        "sent",
        "recv_seq",
        "swallow",
        "last_session",
        "unacked",
        "since",
        "crossing",
        "budget",
        "arrived",
        "path",
        "name",
        "waiting",
        "new",
        "head",
        "misdirected",
    )

    def __init__(
        self, key: int, dialect: Dialect, limits: Limits, effects: Effects, now: float
    ) -> None:
        self.key = key
        self.dialect = dialect
        self.limits = limits
        self.effects = effects
        self.cid = 0  # 0 until WELCOME, and again once dropped
        # made with its first bytes: most clients sit idle, and a decoder is 64 bytes
        self.decoder: Decoder | None = None
        # Decoded, not yet handled (a batch), last first: the next is ``pop()``ed from the
        # end. A list, not a deque: an empty deque holds a 512-byte block (760 bytes a
        # client in all). And only while ``drain`` works or lines wait: None when there
        # are none, since even an empty list is 56 bytes of every idle client.
        self.ready: list[str | ErrorCode] | None = None
        self.eof = False  # the client closed its sending side: #CLOSE# after its last line
        # The one request awaiting the matchmaker's answer; its id comes first.
        self.request: m.ToMatchmakerRequest | None = m.Register(key)
        self.closed = False
        self.leaving = False  # sent #CLOSE# (or EOF): input is ignored until BYE
        self.session = 0  # 0 while FREE
        self.peer = 0
        self.local_peer: Connection | None = None  # the partner, when on this worker
        # written to the socket once per loop tick; one buffer, not one object per line,
        # and none while there is nothing to write (``NOTHING``, shared by every client)
        self.out: bytearray | bytes = NOTHING
        self.writing_paused = False  # the output is over its high-water mark
        # The session a #GOODBYE# or #CLOSE# is ending: until the matchmaker answers,
        # its unconfirmed lines (``sent``) are kept, to send again to a new matchmaker.
        self.ending = 0
        self.last_seen = now  # for --idle-timeout
        self.sent: Unconfirmed | None = None  # in a session across workers
        self.recv_seq = 0  # the partner's last line written, in a session across workers
        self.swallow = 0  # answers already given early (a goodbye crossed by the partner's)
        self.last_session = 0  # the newest session this client has heard of
        self.unacked = 0  # bytes of the partner's lines written here since the last Received
        self.since = 0  # when the matchmaker gave it its id (Welcome.since); it keeps it
        self.crossing = False  # its next line may be a CONNECT that crossed its partner's
        # Lines it may send (--rate): made at its first bytes, not before. A budget made
        # as it connected would be full by then too, so this is the same budget, and the
        # many clients that sit idle hold none (two buckets: 216 bytes).
        self.budget: Budget | None = None
        self.arrived = 0  # the session it moved to this worker for, if it did
        self.path = counts.SAME_WORKER  # how its lines reach the partner (for the metrics)
        self.name = ""  # the name the matchmaker gave it (NAMED), for a new matchmaker
        # in the line of MATCH since this stamp (its Match.asked), for a new matchmaker
        self.waiting: int | None = None
        self.new = False  # it waits with MATCH NEW
        # a line client's first bytes until its first line break (or a record's worth):
        # the original client's 256-byte records here mean it came to the wrong port
        self.head: bytes | None = b"" if dialect.name == "line" else None
        self.misdirected = False

    # ---- lines in ----------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the client; ``drain`` handles them."""
        self.last_seen = now
        if self.closed or self.leaving or self.misdirected:
            return
        if self.head is not None:
            self.sniff(data)
            if self.misdirected:
                return
        decoder = self.decoder
        if decoder is None:
            decoder = self.decoder = self.dialect.decoder(self.limits.max_line)
        decoder.receive(data)

    def relay_read(self, data: bytes, now: float) -> bool:
        """Relay one read of whole chat lines to a partner on this worker, in one step.

        The common case of a session, without a line's decoding, parsing and
        rendering: ``data`` is ASCII (or valid UTF-8), ends a line, holds no
        ``#`` (so no ``#GOODBYE#`` or ``#CLOSE#``) and no ``\\r``, each line within
        ``max_line``; nothing of this client waits ahead of it; its budget
        covers every line; both outputs have room this tick. Then the partner
        gets ``MSG <line>`` for each line, as ``receive`` and ``drain`` would
        have written them one by one. Otherwise nothing is done and it says
        False: the slow way decides, line by line, with the same outcome.
        """
        peer = self.local_peer
        if (
            peer is None
            or not self.session
            or peer.session != self.session
            or self.request is not None
            or self.crossing
            or self.ready
            or (self.decoder is not None and not self.decoder.between_lines())
            or self.head is not None
            or self.closed
            or self.leaving
            or self.writing_paused
            or peer.writing_paused
            or self.dialect is not LINE
            or peer.dialect is not LINE
            or data[-1:] != b"\n"
            or b"#" in data
            or b"\r" in data
        ):
            return False
        size = len(data)
        lines = data.count(b"\n")
        limits = self.limits
        if len(peer.out) + size + 4 * lines > limits.tick or len(self.out) > limits.tick:
            return False  # what it makes (MSG before each line) must fit in this tick
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return False
        if size - lines > limits.max_line and max(map(len, data.split(b"\n"))) > limits.max_line:
            return False
        budget = self.budget
        pace = limits.pace
        if pace is not None:
            if budget is None:  # its first line: a full budget, as ``drain`` makes it
                budget = self.budget = Budget(pace, now)
            if budget.allowance(now) < lines:
                return False
            budget.spend(lines, size, now)
        self.last_seen = now
        COUNTS.lines[self.path] += lines
        peer.write_now(
            b"MSG " + (data if lines == 1 else data.replace(b"\n", b"\nMSG ", lines - 1))
        )
        return True

    def sniff(self, data: bytes) -> None:
        """Look at a line client's first bytes (``wire.legacy.sniff``): the original
        client's record on the line port makes ``drain`` say ``WRONG_PORT``."""
        assert self.head is not None
        head = self.head + data[: RECORD - len(self.head)]
        verdict = sniff(head)
        if verdict is None:
            self.head = head
        else:
            self.head = None  # told: nothing more to look at
            self.misdirected = verdict

    def receive_eof(self) -> bool:
        """The client closed its sending side; whether the socket stays open for replies."""
        if self.closed:  # closed with its input unread: it has read our last line
            return False
        if not self.leaving:
            self.eof = True  # a #CLOSE# once its last line is handled (``drain``)
        return True

    def reading_resumed(self, now: float) -> None:
        """Idle means the client sent nothing, not that the server did not read it."""
        self.last_seen = now

    def has_input(self) -> bool:
        """Lines read and not yet handled."""
        return bool(self.ready) or (self.decoder is not None and self.decoder.pending > 0)

    def held(self) -> int:
        """Whether this client's next line must wait: what it makes has nowhere to go yet.

        ``BACKED_UP`` (its reading pauses): its own output is backed up (its
        replies, or its partner's lines, wait unread), its partner here is backed
        up, or more of its lines to a partner on another worker than the window
        allows wait for confirmation. ``NEXT_TICK``: this tick's output, its own
        or its partner's here, is full; it goes on once that has been written.
        """
        if self.writing_paused:
            return BACKED_UP
        limits = self.limits
        sent = self.sent
        if sent is not None:
            if self.session and sent.size > limits.window:
                return BACKED_UP
        elif (peer := self.local_peer) is not None:
            if peer.writing_paused:
                return BACKED_UP
            if len(peer.out) > limits.tick:
                return NEXT_TICK
        return NEXT_TICK if len(self.out) > limits.tick else GO

    def drain(self, now: float = 0.0) -> int:
        """Handle waiting lines until one needs the matchmaker's answer or must be held.

        Lines are decoded ``BATCH`` at a time (fewer when the budget allows
        fewer), and ``held`` is asked once a batch: a held client overshoots by
        a batch at most. Says whether reading goes on (``READ``), pauses
        (``PAUSE``), pauses until the budget has room (``WAIT``), or the client
        must go (``FAILED``: a bug).
        """
        if self.misdirected:
            return WRONG_PORT
        ready = self.ready
        if ready is None:
            ready = self.ready = []
        decoder = self.decoder  # None: not a byte read yet
        budget = self.budget
        pace = self.limits.pace
        held = GO
        while self.request is None and not self.closed:
            if not ready:
                held = self.held()
                if held:
                    break
                if decoder is None:
                    pass
                elif pace is None:
                    ready.extend(reversed(decoder.take(BATCH)))
                elif decoder.pending:
                    if budget is None:  # its first line: a full budget (see __init__)
                        budget = self.budget = Budget(pace, now)
                    allowed = budget.allowance(now)
                    if not allowed:
                        held = OVER_BUDGET
                        break
                    before = decoder.pending
                    ready.extend(reversed(decoder.take(min(allowed, BATCH))))
                    budget.spend(len(ready), before - decoder.pending, now)
                if not ready:
                    if self.eof:
                        self.eof = False
                        self.leave()
                    break
            event = ready.pop()
            try:
                self.handle(event)
            except Exception:
                log.exception("bug while handling a line from client %s; closing it", self.cid)
                return FAILED
        if not ready and self.ready is ready:
            self.ready = None  # nothing waits: an idle client holds no list
        pending = decoder.pending if decoder is not None else 0
        if held == OVER_BUDGET:
            return WAIT
        if held:  # a full tick pauses too once a read's worth of lines waits behind it
            stop = held == BACKED_UP or pending > self.limits.tick
        else:
            stop = self.request is not None and bool(ready or pending or self.eof)
        return PAUSE if stop else READ

    def handle(self, event: str | ErrorCode) -> None:
        if isinstance(event, str):
            if self.session:
                self.on_busy_line(event)
            else:
                self.on_free_line(event)
        else:
            self.write(self.error(r.Error(event)))

    def on_busy_line(self, line: str) -> None:
        if self.crossing and self.crossed(line):
            return
        command = c.parse_busy(line)
        if isinstance(command, c.Message):
            self.relay(command.text)
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
            self.write(self.error(exc.reply))
            return
        if isinstance(command, c.Get):
            self.ask(m.Get(self.cid, command.free_only, self.key))
        elif isinstance(command, c.Connect):
            if command.name and not self.dialect.named:
                self.write(self.error(r.Error(ErrorCode.USAGE)))
                return
            # stamped as it is read: a client given that id after now is not the one named
            stamp = self.effects.stamp()
            self.ask(m.Connect(self.cid, command.target, self.key, stamp, command.name))
        elif isinstance(command, c.Match):
            self.ask(m.Match(self.cid, self.key, self.effects.stamp(), command.new))
        elif isinstance(command, c.Cancel):
            self.ask(m.Cancel(self.cid, self.key))
        elif isinstance(command, c.Name):
            if not self.dialect.named:  # the original client's users have ids only
                self.write(self.error(r.Error(ErrorCode.USAGE)))
                return
            self.ask(m.Name(self.cid, self.key, command.name))
        elif isinstance(command, c.Ping):
            self.write(self.dialect.render(r.Pong()))
        elif isinstance(command, c.Help):
            self.write(self.dialect.help())
        elif isinstance(command, c.Close):
            self.leave()
        # None: a blank line, ignored

    def crossed(self, line: str) -> bool:
        """Whether ``line`` is a request that crossed the pairing that just reached this client.

        Asked only of the first line after another client's ``CONNECT`` or
        ``MATCH`` paired this one while nothing of its own waited for an
        answer: a ``CONNECT`` to that partner, a ``MATCH`` or a ``CANCEL``
        crossed the pairing, and had it been read a moment earlier the
        matchmaker would have answered it ``ERROR TALKING``. It is answered so
        here, and not relayed. Any other line is chat.
        """
        self.crossing = False
        try:
            command = c.parse_free(line)
        except ProtocolError:
            return False
        if isinstance(command, c.Connect):
            if command.target != self.peer or command.name:
                return False
        elif not isinstance(command, c.Match | c.Cancel):
            return False
        self.write(self.error(r.Error(ErrorCode.TALKING, str(self.peer))))
        return True

    def relay(self, text: str) -> None:
        """A line for the partner: numbered to the matchmaker, or straight into its output."""
        sent = self.sent
        if sent is not None:  # the partner is on another worker
            self.effects.send(m.Relay(self.cid, self.session, text, sent.add(text)))
            COUNTS.lines[self.path] += 1
            return
        peer = self.local_peer
        if peer is not None and peer.session == self.session:
            peer.write(peer.dialect.msg(text))
            COUNTS.lines[self.path] += 1

    def leave(self) -> None:
        """``#CLOSE#`` or EOF: ``BYE`` comes once the matchmaker has freed the id."""
        if self.session:
            self.ending = self.session
        self.session = 0
        self.local_peer = None
        self.leaving = True
        self.eof = False
        if self.ready:
            self.ready.clear()  # what follows #CLOSE# is never handled (``drain``'s list)
        self.ask(m.Drop(self.cid, self.key, answer=True))
        self.cid = 0  # dropped already: detaching must not drop it again

    def ask(self, request: m.ToMatchmakerRequest) -> None:
        self.request = request
        self.effects.send(request)

    # ---- what the matchmaker says ------------------------------------------------------
    # Each returns whether the client may go on with its lines (``drain``).

    def welcome(self, cid: int, since: int) -> bool:
        self.cid, self.since = cid, since
        if self.dialect.welcomes:
            self.write(self.dialect.render(r.Welcome(cid)))
        return self.answered()

    def answer(self, reply: r.Reply) -> bool:
        if self.swallow:  # given already, when the partner's goodbye crossed ours
            self.swallow -= 1
            return False
        request = self.request
        if isinstance(reply, r.Waiting) and isinstance(request, m.Match):
            self.waiting, self.new = request.asked, request.new
        elif isinstance(reply, r.Cancelled):
            self.waiting = None
        elif isinstance(reply, r.Named):
            self.name = reply.name
        self.write(self.error(reply) if type(reply) is r.Error else self.dialect.render(reply))
        return self.answered()

    def error(self, reply: r.Error) -> bytes:
        """An ``ERROR`` line for this client, counted by its code for the metrics."""
        COUNTS.errors[reply.code.value] += 1
        return self.dialect.render(reply)

    def answered(self) -> bool:
        self.request = None
        if self.ending:  # the session is over for good: its lines need no keeping
            self.ending = 0
            self.sent = None
        return True

    def refused(self, reply: r.Reply) -> bytes:
        """The matchmaker will not have this client (full, or its id is not its own):
        the last bytes to send it before closing."""
        self.request = None
        self.cid = 0  # refused: its id, if it had one, is not its own (nothing to drop)
        return self.error(reply) if type(reply) is r.Error else self.dialect.render(reply)

    def paired(self, msg: m.Paired, local_peer: Connection | None) -> bool:
        self.session, self.peer = msg.session, msg.peer
        self.last_session = msg.session
        self.local_peer = local_peer
        if local_peer is not None and local_peer.session == msg.session:
            local_peer.local_peer = self  # it heard first, before this one landed here
        self.waiting = None  # paired: out of the line, if it was in it
        across = msg.peer_worker != self.limits.worker
        self.sent = Unconfirmed() if across else None
        if across:  # a worker of another host is a negative number (the cluster's ELSEWHERE)
            self.path = counts.CROSS_HOST if msg.peer_worker < 0 else counts.RELAYED
        elif msg.session in (self.arrived, local_peer.arrived if local_peer is not None else 0):
            self.path = counts.MOVED
        else:
            self.path = counts.SAME_WORKER
        if msg.requested:
            COUNTS.sessions += 1
        self.recv_seq = 0
        self.unacked = 0
        self.crossing = not msg.requested and self.request is None
        self.write(self.dialect.render(r.Connected(msg.peer, msg.requested)))
        return self.answered() if msg.requested else False

    def deliver(self, msg: m.Deliver) -> bool:
        """A partner's line from another worker; whether it is this session's (and is to
        be confirmed). A line sent again after a matchmaker restart is confirmed again,
        not written again; one that comes before the line it follows is dropped (only
        the next line is taken: what is confirmed, the sender forgets, so a gap would be
        a line lost), and comes again when the sender sends again what is unconfirmed."""
        if self.session != msg.session:
            return False
        if msg.seq > self.recv_seq + 1 and msg.seq:
            return True  # one before it went missing (between hosts): it comes again, then this
        if msg.seq > self.recv_seq:
            self.recv_seq = msg.seq
            self.write(self.dialect.msg(msg.text))
            self.unacked += len(msg.text)
            if self.unacked > self.limits.window // 4 and not self.writing_paused:
                self.confirm()  # the sender's window is filling: confirm now
        return True

    def confirm(self) -> None:
        """Tell the partner's worker which of its lines were written here, so it can send
        more (credit-based flow control between the two workers)."""
        self.unacked = 0
        if self.session and self.cid:
            self.effects.send(m.Received(self.cid, self.session, self.recv_seq))

    def confirmed(self, msg: m.Confirm) -> bool:
        """The partner's worker wrote this client's lines up to ``msg.seq``."""
        sent = self.sent
        if self.session != msg.session or sent is None:
            return False
        sent.confirm(msg.seq)
        return True

    def ended(self, session: int, peer: int) -> bool:
        if self.session == session:
            self.session = 0
            self.sent = None
            self.local_peer = None
            self.write(self.dialect.render(r.Ended(peer)))
            return True  # it may have been held for a partner that is gone now
        request = self.request
        if isinstance(request, m.Goodbye) and request.session == session:
            # Both ends said goodbye at once and the partner's came first: this is our
            # ENDED. Answer now, before anything that follows (a new CONNECTED), and let
            # the matchmaker's own answer to our stale goodbye pass unseen.
            self.write(self.dialect.render(r.Ended(peer)))
            self.swallow += 1
            return self.answered()
        return False

    def matchmaker_replaced(self) -> None:
        """Answers the dead matchmaker owed (to goodbyes answered early) will never come."""
        self.swallow = 0

    def hello_state(self) -> tuple[m.ClientState | None, list[m.Relay]]:
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
                              self.last_session, self.since, False, self.name,
                              None if session else self.waiting, self.new,
                              0 if session or not self.last_session else self.peer)  # fmt: skip
        sent = self.sent
        if sent is None or not session:
            return state, []
        return state, [m.Relay(cid, session, text, seq) for seq, text in sent]

    # ---- moving to another worker -----------------------------------------------------

    def movable(self, cid: int) -> bool:
        """Can this client go to another worker now, with nothing lost or reordered?

        Only a line client that waits for nothing but, at most, the ``CONNECT``
        or ``MATCH`` the move answers; one that has half-closed, is leaving, or
        still has an answer to skip stays. (Its socket must have sent everything too: the
        transport's part.)
        """
        if self.closed or self.leaving or self.cid != cid or self.session:
            return False
        if self.swallow or self.eof or self.dialect.paced:
            return False
        return self.request is None or isinstance(self.request, m.Connect | m.Match)

    def export(self, session: int, now: float) -> Moving:
        """What the next worker needs to go on where this one stops (see ``arriving``).

        The decoded lines and the decoder carry every byte read and not yet handled,
        and the budget what the client may still send.
        """
        if self.budget is not None:
            self.budget.settle(now)
        ready = tuple(reversed(self.ready or ()))
        return Moving(session, self.cid, self.request, ready, self.decoder,
                      now - self.last_seen, bytes(self.out), self.last_session,
                      self.since, self.budget, self.name)  # fmt: skip

    @classmethod
    def arriving(
        cls, key: int, state: Moving, dialect: Dialect, limits: Limits, effects: Effects, now: float
    ) -> Connection:
        """The connection of a client another worker sent here, as ``export`` left it.

        Its request is its own here too, under its new key.
        """
        self = cls(key, dialect, limits, effects, now - state.idle)
        # Not looked at again: its first worker did, from its first byte (one asked for
        # a session before it sent anything at all moves unexamined).
        self.head = None
        request = state.request
        self.request = request._replace(key=key) if request is not None else None
        self.cid = state.cid
        if state.ready:
            self.ready = list(reversed(state.ready))
        self.decoder = state.decoder
        if state.out:
            self.out = bytearray(state.out)
        self.last_session = state.last_session
        self.since = state.since
        self.name = state.name
        if state.budget is not None and limits.pace is not None:
            self.budget = state.budget  # no fresh burst for moving
            self.budget.rebase(now)
        self.arrived = state.session
        return self

    # ---- lines out and the end ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.out:
            self.effects.wrote()
            self.out = bytearray(data)
        else:
            self.out += data

    def write_now(self, data: bytes) -> None:
        """``data`` to the socket now, unless this tick's output waits: then behind it.

        A read relayed in one step is the only output its partner gets from it,
        so it skips the tick's collecting (``Hub.flush``)."""
        if self.closed:
            return
        if self.out:
            self.out += data
        else:
            self.effects.write_now(data)

    def take_output(self) -> bytearray | bytes:
        """What this tick made, to write in one call."""
        out, self.out = self.out, NOTHING
        return out

    def pause_writing(self) -> bool:
        """The output is over its high-water mark: hold whoever writes to it. Whether
        that is news."""
        paused, self.writing_paused = self.writing_paused, True
        return not paused

    def resume_writing(self) -> bool:
        """The client has read most of its output. Whether that is news."""
        paused, self.writing_paused = self.writing_paused, False
        return paused

    def close(self) -> None:
        """The connection is closing or gone: nothing more is handled or written, and
        nobody waits for it to read."""
        self.closed = True
        self.writing_paused = False

    def moved(self) -> None:
        """The client went to another worker with everything ``export`` took."""
        self.closed = True
        self.ready = None
        self.out = NOTHING
