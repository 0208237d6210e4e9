"""The matchmaker process: worker reports in, table decisions, messages out.

Who may pair with whom, and which id a client gets, is ``ClientTable``'s
to decide. This module turns queue messages into table calls and table
results into queue messages, batching the replies per worker until its inbox
is empty, and keeps the rules that are about processes rather than clients:
whose requests count (below), which end of a session across workers moves
and what waits for the move (``MoveOrder``), the stamp each client gets with
its id (``clock``), and how a fresh matchmaker rebuilds the table from the
workers' hellos (``restore``).

A request is acted on only if it comes from the connection that holds its
id: the table's address for the id must be the worker it came from and the
key it names. An id can change hands while requests of its old holder are
still on their way: a client moving when a worker dies is freed and its id
given to a newcomer, and the moved socket, refused on landing, has drained
its lines right after its ``Placed``. Such requests are dropped (a leaving
client still gets its ``BYE``, at its own key). So a moved client need not
hold its lines until its ``Placed`` is accepted: a worker's messages are
handled in order, the ``Placed`` is decided first, and a refused client hears
``OUTAGE`` and nothing else. Requests waiting for a move keep the asker's
table entry, which follows the asker if it moves and dies with it. A client
that moves with its CONNECT unanswered takes it along: the copy from its old
worker is void once the ``Placed`` is in, and it is asked from the ``Placed``.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, NewType

from ipc import messages as m
from ipc.channel import Ends, Receiver, Sender, recv_ends
from ipc.counts import COUNTS
from matchmaker.listing import Rendered
from matchmaker.proc import booting, child_setup, collect_less, exit_on_sigterm
from matchmaker.roles import Spawn
from matchmaker.table import ClientTable, Entry, Session
from wire.errors import ErrorCode, ProtocolError
from wire.replies import Bye, Cancelled, Ended, Error, Listing, Named, Outage, Waiting

log = logging.getLogger("matchmaker.service")

#: A client's address: its worker's index and its key on that worker, in one int
#: (``address``). A tuple of the two took 84 bytes a client with its key; this takes 32.
Addr = NewType("Addr", int)

#: The low bits of an ``Addr`` hold the worker's index, the rest the key.
WORKER_BITS = 20
WORKER_MASK = (1 << WORKER_BITS) - 1


def address(worker: int, key: int) -> Addr:
    """Where a client lives: worker ``worker`` (from 0), key ``key`` there (from 1)."""
    return Addr(key << WORKER_BITS | worker)


def worker_of(addr: Addr) -> int:
    return addr & WORKER_MASK


def key_of(addr: Addr) -> int:
    return addr >> WORKER_BITS


#: The requests that wait for a move their asker (or a CONNECT's target) is in.
Asked = m.Get | m.Connect | m.Match | m.Cancel | m.Name


class MoveOrder(NamedTuple):
    """A session formed across workers whose ``mover`` is being handed to worker ``to``."""

    session: int
    mover: int
    other: int
    to: int
    requester: int  # which end sent the CONNECT (or the MATCH)
    # requests that must wait for the move, with the asker's entry then
    deferred: list[tuple[Asked, Entry[Addr]]]
    # the requester's MATCH, if that formed the session: asked again if the target goes
    match: m.Match | None = None


class Matchmaker:
    """Applies worker reports to the table and queues what each worker must hear.

    With ``migrate``, a session formed across two workers first moves one
    client's socket to its partner's worker (the one holding more clients
    gives one up), so its lines never cross a link; both ends hear
    ``CONNECTED`` once the move is done or refused.

    ``clock`` stamps each client given an id; it must be the clock the workers
    stamp requests with (``run`` passes ``time.monotonic_ns``). Without one,
    every client is stamped 0, and no request is too old for its target.
    """

    def __init__(
        self,
        table: ClientTable[Addr],
        outboxes: list[Sender],
        migrate: bool = False,
        clock: Callable[[], int] = lambda: 0,
    ) -> None:
        if len(outboxes) > WORKER_MASK + 1:  # far past what one host can run
            raise ValueError(
                f"at most {WORKER_MASK + 1} workers: an address has {WORKER_BITS} bits"
            )
        self.table = table
        self.listing = Rendered(table)  # GET's answer, re-rendered only where it changed
        self.outboxes = outboxes
        self.migrate = migrate
        self.clock = clock
        self.moves: dict[int, MoveOrder] = {}  # moves under way, by the cid of either end
        # clients per worker, counting each moving client where it is going: several
        # sessions formed in one batch must not all move their clients to one worker
        self.counts = [0] * len(outboxes)
        self._handlers: dict[type, Callable[[int, Any], None]] = {
            m.Register: self._register,
            m.Get: self._get,
            m.Connect: self._connect,
            m.Match: self._match,
            m.Cancel: self._cancel,
            m.Name: self._name,
            m.Relay: self._relay,
            m.Received: self._received,
            m.Goodbye: self._goodbye,
            m.Drop: self._drop,
            m.Hello: self._hello,
            m.Placed: self._placed,
            m.Lost: self._lost,
        }

    def handle(self, worker: int, batch: Sequence[m.ToMatchmaker]) -> None:
        handlers = self._handlers
        for message in batch:
            handlers[type(message)](worker, message)

    def flush(self) -> None:
        for outbox in self.outboxes:
            outbox.flush()

    def worker_gone(self, worker: int) -> None:
        """Worker ``worker`` died: its clients are gone; their partners elsewhere hear ENDED."""
        # A client on its way to the dead worker went down with it. The dead
        # worker's own clients go first, and nothing they asked is answered
        # (their keys may belong to the new worker's clients).
        for move in self.moves.values():
            move.deferred[:] = [d for d in move.deferred if worker_of(d[1].addr) != worker]
        moving = [p.mover for p in self.moves.values() if p.to == worker]
        here = [e.id for e in self.table.entries() if worker_of(e.addr) == worker]
        gone = here + [cid for cid in dict.fromkeys(moving) if cid not in here]
        lost = set(gone)
        for cid in gone:
            dropped = self._forget(cid)
            ended = dropped[1] if dropped is not None else None
            if ended is not None and not {ended.a.id, ended.b.id} <= lost:
                self._tell_ended(cid, ended)
        log.warning("worker %d died; %d of its clients are gone", worker + 1, len(gone))

    def sessions_active(self) -> int:
        """Sessions with an end on this host (a count over the table: taken per report)."""
        ends = self.table.busy()
        here = sum(1 for e in ends if e.peer is not None and e.peer in self.table)
        return here // 2 + len(ends) - here

    def report(self, control: socket.socket | None, force: bool = False) -> None:
        """The counts for the metrics to the supervisor, when due (``ipc.counts``)."""
        if force or COUNTS.due():
            COUNTS.gauges["sessions_active"] = self.sessions_active()
            COUNTS.report(control, force)

    def _to(self, entry: Entry[Addr], message: m.ToWorker) -> None:
        self.outboxes[entry.addr & WORKER_MASK].send(message)  # worker_of, on every message

    def _forget(self, cid: int) -> tuple[Entry[Addr], Session[Addr] | None] | None:
        """Drop a client from the table, and from the move it was part of."""
        move = self.moves.get(cid)
        moving = move if move is not None and move.mover == cid else None
        dropped = self.table.drop(cid)
        if dropped is not None:  # a moving client is counted where it is going
            self.counts[moving.to if moving is not None else worker_of(dropped[0].addr)] -= 1
        if moving is not None:
            self._settle(moving)
            if moving.match is not None and moving.requester == cid:
                self._requeue(moving.other)  # the one it took out of the line waits on
            requester = self.table.get(moving.requester)
            if requester is not None and self.moves.get(requester.id) is None:
                # It was the target, and the requester still waits for its CONNECT's
                # answer: now that the target is gone, it is OFFLINE (asked at 0, so
                # not even a newcomer with its id would do). A MATCH is asked again.
                worker, key = worker_of(requester.addr), key_of(requester.addr)
                if moving.match is not None:
                    self._match(worker, moving.match._replace(key=key))
                else:
                    self._connect(worker, m.Connect(requester.id, cid, key, 0))
        elif move is not None:  # the partner is still on its way, and will ask again
            del self.moves[cid]
        return dropped

    def _settle(self, move: MoveOrder) -> None:
        """The move is over: forget it, and handle what waited for it.

        Only requests whose askers are still the clients they were: an id
        given to a newcomer meanwhile (a new entry) must not inherit its old
        holder's requests. An asker that moved meanwhile is answered where it
        lives now.
        """
        del self.moves[move.mover]
        if self.moves.get(move.other) is move:
            del self.moves[move.other]
        for request, asker in move.deferred:
            if self.table.get(request.cid) is asker:
                worker, key = worker_of(asker.addr), key_of(asker.addr)
                self.handle(worker, [request._replace(key=key)])

    def _asker(self, worker: int, cid: int, key: int) -> Entry[Addr] | None:
        """The entry of ``cid`` if ``key`` on ``worker`` holds it, else None."""
        entry = self.table.get(cid)
        if entry is None or entry.addr != address(worker, key):
            return None
        return entry

    def _register(self, worker: int, msg: m.Register) -> None:
        since = self.clock()
        try:
            entry = self.table.register(address(worker, msg.key), since)
        except ProtocolError as exc:
            self.outboxes[worker].send(m.Refuse.of(msg.key, exc.reply))
            return
        entry.pinned = msg.pinned
        self.counts[worker] += 1
        self._to(entry, m.Welcome(msg.key, entry.id, since))

    def _waits(self, msg: Asked, me: Entry[Addr]) -> bool:
        """Whether ``msg`` must wait for a move to end (it is queued on the move).

        The asker is in a move: it would see itself BUSY, or hear TALKING, before it
        hears CONNECTED. Or a ``CONNECT``'s target is on its way to another worker
        (FREE, if its partner left meanwhile): a Move now would go where it was; it
        is asked once it lands.
        """
        move = self.moves.get(msg.cid)
        if move is None and isinstance(msg, m.Connect):
            move = self.moves.get(msg.target)
            if move is not None and move.mover != msg.target:
                move = None
        if move is None:
            return False
        move.deferred.append((msg, me))
        return True

    def _get(self, worker: int, msg: m.Get) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return  # the id is not the asker's (any more), or it asks again after a move
        self._to(me, m.Answer.of(msg.key, Listing(self.listing.line(msg.free_only))))

    def _connect(self, worker: int, msg: m.Connect) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None:
            return  # the requester left while its CONNECT was in flight, or lost its id
        if msg.name:  # whoever holds the name now
            target = self.table.named(msg.name)
            if target is None:
                self._to(me, m.Answer.of(msg.key, Error(ErrorCode.OFFLINE, msg.name)))
                return
            msg = msg._replace(target=target, name="")
        if self._waits(msg, me):
            return
        try:
            session = self.table.connect(msg.cid, msg.target, msg.asked)
        except ProtocolError as exc:
            self._to(me, m.Answer.of(key_of(me.addr), exc.reply))
            return
        self._formed(session)

    def _match(self, worker: int, msg: m.Match) -> None:
        """Pair with the longest-waiting client (the asker is the requester), or wait."""
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        try:
            session = self.table.match(msg.cid, msg.new)
        except ProtocolError as exc:
            self._to(me, m.Answer.of(msg.key, exc.reply))
            return
        if session is None:
            self._to(me, m.Answer.of(msg.key, Waiting()))
        else:
            self._formed(session, msg)

    def _cancel(self, worker: int, msg: m.Cancel) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        try:
            self.table.cancel(msg.cid)
        except ProtocolError as exc:
            self._to(me, m.Answer.of(msg.key, exc.reply))
            return
        self._to(me, m.Answer.of(msg.key, Cancelled()))

    def _name(self, worker: int, msg: m.Name) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        try:
            self.table.name(msg.cid, msg.name)
        except ProtocolError as exc:
            self._to(me, m.Answer.of(msg.key, exc.reply))
            return
        self._to(me, m.Answer.of(msg.key, Named(msg.name)))

    def _formed(self, session: Session[Addr], match: m.Match | None = None) -> None:
        """A session between two clients of this host: move one end first, or start it.

        A session with a pinned end (TLS) is relayed, like one with ``--migrate off``:
        neither end moves. ``match`` is the requester's, if a MATCH formed it.
        """
        a, b = session.a, session.b
        if self.migrate and worker_of(a.addr) != worker_of(b.addr) and not (a.pinned or b.pinned):
            # the end on the fuller worker moves; the requester on a tie
            mover, other = (
                (b, a)
                if self.counts[worker_of(b.addr)] > self.counts[worker_of(a.addr)]
                else (a, b)
            )
            move = MoveOrder(session.id, mover.id, other.id, worker_of(other.addr), a.id, [], match)
            self.moves[mover.id] = self.moves[other.id] = move
            self.counts[worker_of(mover.addr)] -= 1
            self.counts[move.to] += 1
            self._to(mover, m.Move(key_of(mover.addr), mover.id, session.id, worker_of(other.addr)))
            return
        self._start(session)

    def _start(self, session: Session[Addr]) -> None:
        # The target hears first: on a shared worker the requester's queued lines
        # are relayed the moment it is paired, and the target must be BUSY by then.
        self._paired(session.b, session.a, session.id, requested=False)
        self._paired(session.a, session.b, session.id, requested=True)

    def _placed(self, worker: int, msg: m.Placed) -> None:
        """A moving client landed (or stayed put): record where, then start its session."""
        addr = address(worker, msg.key)
        me = self.table.get(msg.cid)
        move = self.moves.get(msg.cid)
        if move is not None and (move.mover, move.session) != (msg.cid, msg.session):
            move = None  # it is the other end of someone else's move, not this one
        if me is not None and move is not None:
            if self._landed(me, move, addr):
                return
        elif me is None:
            # A matchmaker that never knew of the move, or a dead worker's client
            # that was in flight: it is alive here, so it keeps its id if it can.
            try:
                me = self.table.admit(msg.cid, addr, msg.since)
            except ProtocolError:
                self.outboxes[worker].send(m.Refuse.of(msg.key, Outage()))
                return
            self.counts[worker] += 1
        elif me.addr != addr:  # its id was given to a newer client meanwhile
            self.outboxes[worker].send(m.Refuse.of(msg.key, Outage()))
            return
        else:
            return  # known here already (its hello said so); so is its request
        # The session it asked for is off, or its request is still on its way from
        # the worker it left, where it no longer holds its id: it is asked from here.
        if msg.request is not None:
            self.handle(worker, [msg.request])

    def _landed(self, me: Entry[Addr], move: MoveOrder, addr: Addr) -> bool:
        """The mover of ``move`` lives at ``addr`` now: start the session if it is still on.

        Whether the request the mover brought along (if any) is answered: by
        ``CONNECTED`` if it formed the session, or as one that waits for a move
        (this one, or its target's).
        """
        self.counts[move.to] -= 1  # counted there since the Move
        self.counts[worker_of(addr)] += 1
        me.addr = addr
        waited = any(asker is me for p in self.moves.values() for _, asker in p.deferred)
        other = self.table.get(move.other)
        if other is not None and me.session == move.session:
            requester, target = (me, other) if move.requester == me.id else (other, me)
            self._start(Session(move.session, requester, target))
            self._settle(move)  # the partner's CONNECTs get TALKING after CONNECTED
            return waited or requester is me
        self._settle(move)  # the partner left while this one was moving
        if move.match is not None and move.requester != me.id:
            self._requeue(me.id)  # it waited, and never heard of the session
        return waited

    def _paired(self, end: Entry[Addr], peer: Entry[Addr], sid: int, requested: bool) -> None:
        self._to(
            end,
            m.Paired(
                key_of(end.addr), sid, peer.id, worker_of(peer.addr), key_of(peer.addr), requested
            ),
        )

    def _relay(self, worker: int, msg: m.Relay) -> None:
        peer = self.table.partner(msg.cid, msg.session)
        if peer is not None:  # else the session ended while the line was in flight
            # key_of and _to inline: once a relayed line
            addr = peer.addr
            deliver = m.Deliver(addr >> WORKER_BITS, msg.session, msg.text, msg.seq)
            self.outboxes[addr & WORKER_MASK].send(deliver)

    def _received(self, worker: int, msg: m.Received) -> None:
        peer = self.table.partner(msg.cid, msg.session)
        if peer is not None:
            addr = peer.addr  # key_of and _to inline: once a relayed line
            self.outboxes[addr & WORKER_MASK].send(
                m.Confirm(addr >> WORKER_BITS, msg.session, msg.seq)
            )

    def _goodbye(self, worker: int, msg: m.Goodbye) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None:
            return  # the id, and any session it is in, is not the asker's
        # The requester hears ENDED as the answer to its goodbye, even a stale one (the
        # partner ended the session first): its worker ignored the partner's ENDED.
        self._tell_ended(msg.cid, self.table.goodbye(msg.cid, msg.session))
        self._to(me, m.Answer.of(msg.key, Ended(msg.peer)))

    def _drop(self, worker: int, msg: m.Drop) -> None:
        if self._asker(worker, msg.cid, msg.key) is not None:
            dropped = self._forget(msg.cid)
            if dropped is not None:
                self._tell_ended(msg.cid, dropped[1])
        if msg.answer:  # even for an id a restarted matchmaker never knew, or gave away
            self.outboxes[worker].send(m.Refuse.of(msg.key, Bye()))

    def _lost(self, worker: int, msg: m.Lost) -> None:
        """A client moving to ``worker`` never arrived: free its id, if it is still moving."""
        move = self.moves.get(msg.cid)
        if move is None or (move.mover, move.session, move.to) != (msg.cid, msg.session, worker):
            return  # freed already (its old worker died), or a new matchmaker never knew it
        dropped = self._forget(msg.cid)
        if dropped is not None:
            self._tell_ended(msg.cid, dropped[1])

    def _hello(self, worker: int, msg: m.Hello) -> None:
        """A restarted worker's first word: it has no clients yet; answer what it asks."""
        if msg.clients:
            log.error(
                "worker %d reported %d clients to a running matchmaker",
                worker + 1,
                len(msg.clients),
            )
        self.handle(worker, list(msg.requests))

    def restore(self, hellos: dict[int, m.Hello]) -> None:
        """Rebuild the table from every worker's hello, then answer their open requests.

        The workers' views can disagree where the dead matchmaker's last words
        reached one end of a session and not the other. A session one end still
        holds stands for the other end too if that end is FREE and never heard of
        it (its CONNECTED was lost); if that end has heard of it and is FREE (it
        saw ENDED) or is gone or in another session, the session is over. A
        client whose goodbye (or ``#CLOSE#``) is open still holds the session it
        ends: the lines it sent before are relayed first, then its request is
        answered and ends the session.
        """
        entries: dict[int, Entry[Addr]] = {}
        heard: dict[int, int] = {}  # cid -> the newest session it has heard of
        goodbyes: dict[int, int] = {}  # cid -> the session its open goodbye ends
        line: list[tuple[int, int, bool]] = []  # (since, cid, new): the line of MATCH
        last_peers: dict[int, int] = {}  # cid -> the partner of its last session
        last_session = 0
        for worker, hello in hellos.items():
            for st in hello.clients:
                entries[st.cid] = Entry(
                    st.cid, address(worker, st.key), st.peer or None, st.session, st.since,
                    st.pinned, st.name,
                )  # fmt: skip
                heard[st.cid] = st.last_session
                if st.waiting is not None:
                    line.append((st.waiting, st.cid, st.new))
                if st.last_peer:
                    last_peers[st.cid] = st.last_peer
                last_session = max(last_session, st.session, st.last_session)
            for req in hello.requests:
                if isinstance(req, m.Goodbye):
                    goodbyes[req.cid] = req.session
                    last_session = max(last_session, req.session)
        answered: set[int] = set()  # clients whose CONNECT the restored session answers
        for e in list(entries.values()):
            if not e.session or e.peer is None:
                continue
            p = entries.get(e.peer)
            if p is not None and p.session == e.session and p.peer == e.id:
                continue
            if p is None and self._elsewhere(e.peer):
                continue  # its partner is on another host: the shared table says
            if p is not None and not p.session and heard.get(p.id, 0) < e.session:
                # p never heard of this session: its CONNECTED was lost; or its
                # goodbye is open, and ends the session properly below
                p.session, p.peer = e.session, e.id
                if goodbyes.get(p.id) != e.session:
                    requested = any(
                        (isinstance(r, m.Connect) and r.target == e.id or isinstance(r, m.Match))
                        and r.cid == p.id
                        for r in hellos[worker_of(p.addr)].requests
                    )
                    if requested:
                        answered.add(p.id)
                    self._paired(p, e, e.session, requested)
                continue
            self._to(e, m.Ended(key_of(e.addr), e.session, e.peer))
            e.session, e.peer = 0, None
        self._last_peers(entries, heard, last_peers)
        waiting = [(cid, new) for _, cid, new in sorted(line)]
        for e in self.table.restore(list(entries.values()), last_session, waiting):
            log.error("client %d lost its name to a client that holds it too", e.id)
        self.moves.clear()  # moves the dead matchmaker ordered end in Placed, or hellos
        self.counts = [0] * len(self.outboxes)
        for e in entries.values():
            self.counts[worker_of(e.addr)] += 1
        if entries:  # a restart; a first start has nothing to rebuild
            log.info("table rebuilt: %d clients from %d workers", len(entries), len(hellos))
        for worker, hello in hellos.items():  # lines first: a goodbye ends a session after them
            self.handle(worker, list(hello.lines))
        for worker, hello in hellos.items():
            requests = [
                r
                for r in hello.requests
                if not (isinstance(r, m.Connect | m.Match) and r.cid in answered)
            ]
            self.handle(worker, requests)

    @staticmethod
    def _last_peers(
        entries: dict[int, Entry[Addr]], heard: dict[int, int], last_peers: dict[int, int]
    ) -> None:
        """Who ``MATCH NEW`` skips, as far as the hellos tell: the holder of the last
        partner's id, if its newest session is the one they had (else it may be a
        newcomer that took the id)."""
        for cid, peer in last_peers.items():
            other = entries.get(peer)
            if other is not None and heard.get(peer) == heard.get(cid):
                entries[cid].last_peer = (other.id, other.since)

    def _requeue(self, cid: int) -> bool:
        """``ClientTable.requeue``: back to the head of the line, if it is FREE and not in it."""
        return self.table.requeue(cid)

    def _elsewhere(self, cid: int) -> bool:
        """Whether a partner missing from this host's table may live on another host."""
        return False

    def _tell_ended(self, leaver: int, session: Session[Addr] | None) -> None:
        """Tell the end that did not leave (the leaver was told by its worker)."""
        if session is None:
            return
        stays, left = (session.b, session.a) if session.a.id == leaver else (session.a, session.b)
        self._to(stays, m.Ended(key_of(stays.addr), session.id, left.id))


def run(
    max_clients: int,
    links: list[Ends],
    control: socket.socket,
    orphaned: Callable[[], bool],
    migrate: bool = True,
) -> None:
    """Serve until SIGTERM or ``orphaned()``, which is checked at least once a second.

    ``links`` are this end of every worker's link; when a worker dies, the
    supervisor sends the ends of its replacement's fresh link over ``control``.
    """
    slots = range(len(links))
    inboxes = [Receiver(ends.inbox, m.from_wire) for ends in links]
    outboxes = [Sender(ends.outbox, pack=m.to_wire) for ends in links]
    matchmaker = Matchmaker(ClientTable(max_clients), outboxes, migrate, time.monotonic_ns)
    starting = Startup(matchmaker, len(slots))
    control.setblocking(False)
    watched = [control.fileno()]  # until the supervisor is gone
    matchmaker.report(control, force=True)  # the supervisor's sign that this one serves
    while not orphaned():
        blocked = [o for o in outboxes if o.blocked]
        readers = [r.fileno() for r in inboxes if not r.closed]
        ready, writable = _wait([*readers, *watched], blocked, 1.0)
        for outbox in writable:
            outbox.resume()
        replaced = set()
        if watched and watched[0] in ready:
            for slot, ends in fresh_links(control, watched):
                # worker ``slot`` died; its replacement talks over a fresh link
                replaced.add(slot)
                inboxes[slot].close()
                outboxes[slot].abandon()
                inboxes[slot] = Receiver(ends.inbox, m.from_wire)
                outboxes[slot] = Sender(ends.outbox, pack=m.to_wire)
                if starting.waiting:
                    starting.forget(slot)
                else:
                    matchmaker.worker_gone(slot)
        for i in slots:
            if i in replaced or inboxes[i].fileno() not in ready:
                continue
            for batch in inboxes[i].drain():
                if starting.waiting:
                    starting.take(i, batch)
                else:
                    matchmaker.handle(i, batch)
        matchmaker.flush()
        matchmaker.report(control)


def fresh_links(control: socket.socket, watched: list[int]) -> Iterator[tuple[int, Ends]]:
    """Every ``(slot, ends)`` waiting on ``control``; empties ``watched`` once it has closed.

    Ends that came without their descriptors (at the descriptor limit) leave a
    worker with no way to reach this matchmaker: ``fdpass.Dropped`` ends the
    process, and its replacement starts with fresh links to every worker.
    """
    while True:
        try:
            got = recv_ends(control)
        except BlockingIOError:
            return
        if got is None:  # the supervisor has gone; ``orphaned`` ends the loop
            watched.clear()
            return
        yield got


class Startup:
    """Holds every batch until each worker's hello is in, then rebuilds the table.

    A matchmaker, first or restarted, knows nothing until the workers say what
    they hold; one worker's clients may be partners of another's.
    """

    def __init__(self, matchmaker: Matchmaker, workers: int) -> None:
        self.matchmaker = matchmaker
        self.waiting = set(range(workers))
        self.hellos: dict[int, m.Hello] = {}
        self.held: list[tuple[int, list[m.ToMatchmaker]]] = []

    def forget(self, worker: int) -> None:
        """A worker died before the table was rebuilt: its hello and its words are void."""
        self.hellos.pop(worker, None)
        self.held = [(w, batch) for w, batch in self.held if w != worker]
        self.waiting.add(worker)  # its replacement says hello on a fresh link

    def take(self, worker: int, batch: list[m.ToMatchmaker]) -> None:
        if worker in self.waiting and batch and isinstance(batch[0], m.Hello):
            self.hellos[worker] = batch[0]
            self.waiting.discard(worker)
            batch = batch[1:]
        self.held.append((worker, batch))
        if not self.waiting:
            self.matchmaker.restore(self.hellos)
            for w, held in self.held:
                self.matchmaker.handle(w, held)
            self.held = []


def _wait(
    readers: list[int], writers: list[Sender], timeout: float
) -> tuple[set[int], list[Sender]]:
    """The readable ``readers`` and the ``writers`` whose pipes have room again."""
    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    by_fd = {w.fileno(): w for w in writers}
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    ready: set[int] = set()
    writable: list[Sender] = []
    for fd, _events in poller.poll(timeout * 1000):
        if fd in by_fd:
            writable.append(by_fd[fd])
        else:
            ready.add(fd)
    return ready, writable


def main(spawn: Spawn) -> None:
    """Entry point of the matchmaker process (spawned by the supervisor)."""
    with booting(spawn.title):
        parent = child_setup(spawn.title, spawn.config.log_level, spawn.config.log_format)
        exit_on_sigterm()
        collect_less()  # its table holds an entry per client
        assert spawn.control is not None
        config = spawn.config

    def orphaned() -> bool:
        return os.getppid() != parent

    run(config.max_clients, spawn.links, spawn.control, orphaned, config.migrate)
