"""One worker's clients, and its link to the matchmaker.

The hub routes by key: what the matchmaker says about a key goes to that
client's ``Connection`` if it is still here, and is dropped if not; what a
connection says goes on to the matchmaker. It owns what is the worker's, not
one client's: its clients by key, the clients moving out and landing, the
confirmations due, the clients whose output is backed up, the sweep of idle
and stalled ones, the hello a new matchmaker gets, and its count of clients
by address for the acceptor (``ipc.peers``, with ``--max-per-ip``). Lines between two
clients of this worker never come here: each connection writes into its
partner's (``Connection.relay``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ipc import messages as m
from ipc.channel import Sender
from ipc.counts import COUNTS
from ipc.peers import PeerCounts, address_key
from matchmaker.config import Config
from matchmaker.drops import Reason, dropped, peer_of
from wire.dialects import LINE, Dialect
from wire.errors import ErrorCode
from wire.replies import Bye, Error, Outage
from workers.connection import Limits
from workers.migrate import Mover
from workers.moving import Moving
from workers.output import reset
from workers.parking import Lot
from workers.protocol import ClientProtocol

if TYPE_CHECKING:  # loaded only with --ws-port (h11, wsproto, the page)
    from workers.webpage import Page
    from workers.websocket import Upgrade

log = logging.getLogger("workers.hub")

#: Confirming every line would double the matchmaker's traffic; one confirmation
#: per client every 50 ms keeps a sender's unconfirmed lines to what 50 ms carries.
CONFIRM_AFTER = 0.05


class Hub:
    """The clients of one worker process, by key."""

    #: --ws-port: the page it serves (only then: the code of that port is not loaded without)
    page: Page

    def __init__(
        self,
        index: int,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        outbox: Sender,
        on_count: Callable[[int], None] = lambda n: None,
        peers: PeerCounts | None = None,
    ) -> None:
        self.index = index
        self.peers = peers  # this worker's clients by address, for --max-per-ip
        self.seats: dict[int, bytes] = {}  # key -> the address it is counted under
        self.config = config
        self.loop = loop
        self.outbox = outbox
        self.on_count = on_count  # tells the acceptor how loaded this worker is
        # flow control, and each client's budget
        self.limits = Limits.of(index, config.sendq, config.max_line, config.rate, config.burst)
        self.congested: set[ClientProtocol] = set()  # output over ``high``, not yet drained
        # Clients gone while their #CLOSE# waits for the matchmaker: a new matchmaker
        # must still hear of them (and of their last lines) until it is answered.
        self.departing: dict[int, ClientProtocol] = {}
        self.clients: dict[int, ClientProtocol] = {}  # attached and not closed, by key
        # Attached, out of ``clients`` (closing, or moved away) and not yet lost: with
        # ``clients``, every transport not yet lost. Not one set of them all: its table
        # was about 100 bytes of every idle client.
        self.closing: set[ClientProtocol] = set()
        self.dirty: list[ClientProtocol] = []  # clients with output this tick
        self.unconfirmed: set[ClientProtocol] = set()  # wrote partner lines not yet confirmed
        self._confirm_timer: asyncio.Handle | None = None
        self.stopping = False
        self._keys = itertools.count(1)
        self._starting: set[asyncio.Future[Any]] = set()  # what sockets being served await
        self._all_lost: asyncio.Event | None = None
        self._dispatch: dict[type, Callable[[Any], None]] = {
            m.Welcome: self._welcome,
            m.Answer: self._answer,
            m.Refuse: self._refuse,
            m.Paired: self._paired,
            m.Deliver: self._deliver,
            m.Confirm: self._confirm,
            m.Move: self._move,
            m.Ended: self._ended,
        }
        self.mover: Mover | None = None  # set by the process once it can move clients
        self.arriving: dict[int, int] = {}  # key -> the session a client moved here for
        self.landing: dict[int, ClientProtocol] = {}  # moved here, socket not served yet
        # what a new matchmaker, told of a landing client in the hello, said to it early
        self.waiting_for: dict[int, list[m.ToWorker]] = {}
        self.moving: dict[int, list[tuple[ClientProtocol, int]]] = {}  # by worker, this batch
        self.tls: ssl.SSLContext | None = None  # the TLS port's, and wss:// with --ws-port
        if config.tls_cert is not None:
            from workers.tls import server_context

            assert config.tls_key is not None
            self.tls = server_context(config.tls_cert, config.tls_key)
        if config.ws_port is not None:
            # its code at start, as every other module: a missing wsproto stops the server now
            import workers.websocket  # noqa: F401
            from workers.webpage import Page

            self.page = Page.load()
        self.upgrading: set[Upgrade] = set()  # --ws-port: its connections not yet upgraded
        # --park: where idle clients wait without a transport (its descriptor from the
        # start, so that a worker's count of them does not move with its first client)
        self.lot: Lot | None = Lot(loop) if config.park else None

    def can_move(self, mover: Mover) -> None:
        """Clients may move to other workers from now on, and arrive from them."""
        self.mover = mover

    def stop(self) -> None:
        """Stopping: nothing more is sent to the matchmaker, and nobody new is served."""
        self.stopping = True

    # ---- connections ------------------------------------------------------------------

    def adopt(
        self, sock: socket.socket, dialect: Dialect = LINE, tls: bool = False, web: bool = False
    ) -> None:
        """Serve a socket the acceptor handed over, in the dialect of the port it came in on.

        A socket of the TLS port is served once its handshake is done, one of the
        WebSocket port once it has upgraded (``workers.websocket``); only then
        does it ask for an id. Both are pinned to this worker. With ``--park on``
        one of the plain line port is parked (``workers.parking``).
        """
        sock.setblocking(False)  # its TCP options came from the listener (ipc.sockopts)
        key = next(self._keys)
        self._seat(key, sock)
        if web:
            from workers.websocket import Upgrade

            secure = tls and self.tls is not None
            client = ClientProtocol(self, key, LINE, pinned=True)
            upgrade = lambda: Upgrade(self, key, client, secure)  # noqa: E731
            self._serve(sock, key, upgrade, tls=self.tls if secure else None)
            return
        if tls and self.tls is not None:
            factory = lambda: ClientProtocol(self, key, dialect, pinned=True)  # noqa: E731
            self._serve(sock, key, factory, tls=self.tls)
            return
        if self.lot is not None and dialect is LINE:
            ClientProtocol(self, key, dialect).park(self.lot, sock)
            return
        self._serve(sock, key, lambda: ClientProtocol(self, key, dialect))

    def promote(self, client: ClientProtocol, sock: socket.socket) -> None:
        """A parked client's transport (``ParkedOutput.promote``)."""
        self._serve(sock, client.key, lambda: client, promoted=client)

    def arrive(self, sock: socket.socket, state: Moving) -> None:
        """Serve a client another worker moved here for ``state.session`` (its socket options
        came along)."""
        sock.setblocking(False)
        if self.stopping:  # too late to serve it: it gets its OUTAGE here and now
            dropped(Reason.STOPPING, state.cid, peer_of(sock), "moved here as the worker stops")
            try:
                sock.send(LINE.render(Outage()))
            except OSError:
                pass
            sock.close()
            return
        key = next(self._keys)
        client = ClientProtocol.arriving(self, key, state)
        self.arriving[key] = state.session
        self.landing[key] = client
        self._seat(key, sock)
        self._serve(sock, key, lambda: client, client)

    def _serve(
        self,
        sock: socket.socket,
        key: int,
        factory: Callable[[], asyncio.Protocol],
        moved: ClientProtocol | None = None,
        tls: ssl.SSLContext | None = None,
        promoted: ClientProtocol | None = None,
    ) -> None:
        if tls is None:
            serving = self.loop.connect_accepted_socket(factory, sock)
            peer = ""
        else:
            timeout = self.config.tls_handshake_timeout
            serving = self.loop.connect_accepted_socket(
                factory, sock, ssl=tls, ssl_handshake_timeout=timeout
            )
            peer = peer_of(sock)  # for the log, should the handshake fail (the socket goes)
        start(
            serving,
            lambda exc: self._adopted(exc, sock, key, moved, peer, promoted),
            self._starting,
        )

    def _adopted(
        self,
        exc: BaseException | None,
        sock: socket.socket,
        key: int,
        moved: ClientProtocol | None,
        peer: str = "",
        promoted: ClientProtocol | None = None,
    ) -> None:
        if isinstance(exc, asyncio.CancelledError):
            exc = None
        if exc is not None and promoted is not None:  # served already: it is lost
            cid = promoted.core.cid
            dropped(Reason.ERROR, cid, peer_of(sock), f"could not serve the socket: {exc}")
            sock.close()
            promoted.connection_lost(exc if isinstance(exc, Exception) else None)
        elif exc is not None and peer:  # the socket is closed: no id was given
            from workers.tls import handshake_failure, timed_out

            timeout = self.config.tls_handshake_timeout
            late = Reason.HANDSHAKE_TIMEOUT if timed_out(exc) else Reason.HANDSHAKE_FAILED
            dropped(late, 0, peer, handshake_failure(exc, timeout))
            sock.close()
            self._unseat(key)
        elif exc is not None:
            cid = moved.core.cid if moved is not None else 0
            dropped(Reason.ERROR, cid, peer_of(sock), f"could not serve the socket: {exc}")
            sock.close()
            self._unseat(key)
            if moved is not None:  # the matchmaker holds its id until told
                session = self.arriving.pop(moved.key, 0)
                self.landing.pop(moved.key, None)
                self.waiting_for.pop(moved.key, None)
                cid = moved.core.cid
                self.to_matchmaker(m.Lost(cid, session))
                # a new matchmaker heard of it in our hello: it holds the id here
                self.to_matchmaker(m.Drop(cid, moved.key))

    def _seat(self, key: int, sock: socket.socket) -> None:
        """Count a new client under its address for the acceptor, until ``_unseat``."""
        if self.peers is None:
            return
        try:
            peer = address_key(sock.getpeername()[0])
        except (OSError, IndexError):  # reset already (it goes at once), or not TCP
            return
        self.seats[key] = peer
        self.peers.add(self.index, peer, 1)

    def unseat(self, key: int) -> None:
        """A WebSocket port's connection closed before it upgraded (a page load, a refusal)."""
        self._unseat(key)

    def _unseat(self, key: int) -> None:
        """The client is closing, gone or moved away: its address may connect again."""
        peer = self.seats.pop(key, None)
        if peer is not None and self.peers is not None:
            self.peers.add(self.index, peer, -1)

    def attach(self, client: ClientProtocol) -> None:
        session = self.arriving.pop(client.key, None)
        self.landing.pop(client.key, None)
        if self.stopping:
            self.waiting_for.pop(client.key, None)
            client.close(client.core.dialect.render(Outage()), Reason.STOPPING)
            return
        self.clients[client.key] = client
        self.on_count(len(self.clients))
        if session is None:
            self.to_matchmaker(m.Register(client.key, client.pinned))
            return
        self._placed(client, session)
        for message in self.waiting_for.pop(client.key, ()):
            self._dispatch[type(message)](message)
        if client.core.out:
            self.mark_dirty(client)
        client.drain()  # pauses reading while lines wait for the CONNECT's answer

    def detach(self, client: ClientProtocol) -> None:
        """The client is closing or gone: forget it and tell the matchmaker."""
        core = client.core
        self._unseat(client.key)
        if client.output is not None:  # served: lost once its transport (or socket) is
            self.closing.add(client)
        if self.clients.pop(client.key, None) is not None:
            self.on_count(len(self.clients))
            if core.cid:
                self.to_matchmaker(m.Drop(core.cid, client.key))
            elif core.leaving and core.request is not None:
                self.departing[client.key] = client
        self.congested.discard(client)
        self._resume_peer(client)  # it may have waited for this client to read

    def lost(self, client: ClientProtocol) -> None:
        self.closing.discard(client)
        if not self.closing and not self.clients and self._all_lost is not None:
            self._all_lost.set()

    def connections(self) -> list[ClientProtocol]:
        """Every client whose transport is not yet lost."""
        return [*self.clients.values(), *self.closing]

    # ---- lines ---------------------------------------------------------------------------

    def to_matchmaker(self, message: m.ToMatchmaker) -> None:
        if not self.stopping:
            self.outbox.send(message)

    def drained(self, client: ClientProtocol) -> None:
        """``client``'s output has room again: go on with whoever waited for that."""
        client.resume()
        self._resume_peer(client)
        if client in self.unconfirmed and self._confirm_timer is None:
            self._confirm_timer = self.loop.call_soon(self.confirm)

    def _resume_peer(self, client: ClientProtocol) -> None:
        peer = client.core.local_peer
        if peer is not None and (glue := self.clients.get(peer.key)) is not None:
            glue.resume()

    def mark_dirty(self, client: ClientProtocol) -> None:
        if not self.dirty:
            self.loop.call_soon(self.flush)
        self.dirty.append(client)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for client in dirty:
            client.flush()

    # ---- what the matchmaker says ------------------------------------------------------

    def from_matchmaker(self, batches: list[list[m.ToWorker]], last_words: bool = False) -> None:
        """Carry out what the matchmaker says; ``last_words``: it is dead and replaced."""
        dispatch = self._dispatch
        landing = self.landing
        for batch in batches:
            for message in batch:
                if landing and message.key in landing:  # its socket is not served yet
                    self.waiting_for.setdefault(message.key, []).append(message)
                else:
                    dispatch[type(message)](message)
        if self.moving and last_words:
            # A move a dead matchmaker ordered is void: the client stays, and the hello
            # carries its request (or its partner's) to the new one, which decides anew.
            # Moved now, it could land after its new worker's hello and lose its id.
            self.moving = {}
        elif self.moving:  # nothing was read from any client since the Moves were decided
            self.send_moving()
        if self.unconfirmed and self._confirm_timer is None:
            self._confirm_timer = self.loop.call_later(CONFIRM_AFTER, self.confirm)

    def use_outbox(self, outbox: Sender) -> None:
        """What goes to the matchmaker goes through ``outbox`` from now on (a fresh link)."""
        self.outbox = outbox

    def matchmaker_replaced(self) -> None:
        """The matchmaker died: the answers it owed will never come."""
        for client in self.clients.values():
            client.core.matchmaker_replaced()

    def confirm(self) -> None:
        """Tell the senders' workers which lines arrived, so they can send more.

        Not for a client whose output is backed up: its partner's lines then
        wait, unconfirmed, on the partner's worker, and its partner's reading
        pauses (credit-based flow control between the two workers).
        """
        self._confirm_timer = None
        held = set()
        for client in self.unconfirmed:
            if client.core.writing_paused:
                held.add(client)
            else:
                client.core.confirm()
        self.unconfirmed = held

    def _welcome(self, msg: m.Welcome) -> None:
        client = self.clients.get(msg.key)
        if client is None:
            self.to_matchmaker(m.Drop(msg.cid, msg.key))  # it left before it got its id
        elif client.core.welcome(msg.cid, msg.since):
            client.drain()

    def _answer(self, msg: m.Answer) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.core.answer(msg.reply):
            client.drain()

    def _refuse(self, msg: m.Refuse) -> None:
        self.departing.pop(msg.key, None)
        client = self.clients.get(msg.key)
        if client is not None:
            reply, cid = msg.reply, client.core.cid
            client.close(client.core.refused(reply), refusal(reply), cid=cid)

    def hello(self) -> m.Hello:
        """What a new matchmaker needs to know: every client, every open request, and
        every line to another worker that the old one may have lost (the partners'
        workers drop repeats)."""
        clients: list[m.ClientState] = []
        requests: list[m.ToMatchmakerRequest] = []
        lines: list[m.Relay] = []
        for c in [*self.clients.values(), *self.departing.values(), *self.landing.values()]:
            state, resend = c.core.hello_state()
            if state is not None:
                clients.append(state._replace(pinned=True) if c.pinned else state)
                lines += resend
            if c.core.request is not None:
                requests.append(c.core.request)
        return m.Hello(tuple(clients), tuple(requests), tuple(lines))

    def _paired(self, msg: m.Paired) -> None:
        client = self.clients.get(msg.key)
        if client is not None:  # else its Drop is on the way and will end the session
            here = self.clients.get(msg.peer_key) if msg.peer_worker == self.index else None
            if client.core.paired(msg, here.core if here is not None else None):
                client.drain()

    def _deliver(self, msg: m.Deliver) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.core.deliver(msg):
            self.unconfirmed.add(client)

    def _confirm(self, msg: m.Confirm) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.core.confirmed(msg):
            client.resume()

    def _move(self, msg: m.Move) -> None:
        client = self.clients.get(msg.key)
        if client is None or client.core.leaving:
            return  # it left; its Drop tells the matchmaker the move is off
        if self.mover is not None and not self.stopping and client.movable(msg.cid):
            self.moving.setdefault(msg.to, []).append((client, msg.session))
        else:
            self._placed(client, msg.session)

    def send_moving(self) -> None:
        """Hand over the clients this batch moves, one datagram per worker where possible."""
        moving, self.moving = self.moving, {}
        assert self.mover is not None
        for to, group in moving.items():
            went = self.mover.send(to, [(c.fileno(), c.export(session)) for c, session in group])
            for (client, session), gone in zip(group, went, strict=True):
                if gone:
                    COUNTS.moves += 1
                    del self.clients[client.key]
                    self.closing.add(client)  # until its transport is lost
                    self._unseat(client.key)
                    client.moved()
                else:
                    self._placed(client, session)
        self.on_count(len(self.clients))

    def _placed(self, client: ClientProtocol, session: int) -> None:
        """Tell the matchmaker where a client it asked to move lives now (here, by key)."""
        core = client.core
        self.to_matchmaker(m.Placed(client.key, core.cid, session, core.request, core.since))

    def _ended(self, msg: m.Ended) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.core.ended(msg.session, msg.peer):
            client.resume()

    def sweep(self) -> None:
        """Once a second: cut clients idle past ``--idle-timeout``, or stalled past
        ``--stall-timeout`` (output backed up and not read at all); runs itself again."""
        if self.stopping:
            return
        now = self.loop.time()
        config = self.config
        for client in [c for c in self.congested if c.stalled(now, config.stall_timeout)]:
            COUNTS.errors[ErrorCode.SLOW_CONSUMER.value] += 1
            last = client.core.dialect.render(Error(ErrorCode.SLOW_CONSUMER))
            why = f"read none of its output for --stall-timeout {config.stall_timeout:g}s"
            client.close(last, Reason.STALLED, why)
        timeout = config.idle_timeout
        if timeout:
            for client in [c for c in self.clients.values() if c.idle(now, timeout)]:
                COUNTS.errors[ErrorCode.IDLE.value] += 1
                last = client.core.dialect.render(Error(ErrorCode.IDLE))
                client.close(last, Reason.IDLE, f"silent for --idle-timeout {timeout:g}s")
        interval = min(timeout / 4, 1.0) if timeout else 1.0
        self.loop.call_later(min(interval, config.stall_timeout / 4), self.sweep)

    # ---- shutdown ------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """``OUTAGE`` to every client, then wait for their sockets to close."""
        self.stop()
        if self._starting:
            await asyncio.wait(list(self._starting), timeout=timeout)
        for upgrade in list(self.upgrading):  # no id yet: nothing to tell them
            upgrade.stop()
        for client in list(self.clients.values()):
            client.close(client.core.dialect.render(Outage()), Reason.STOPPING)
        if self.clients or self.closing:
            self._all_lost = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_lost.wait(), timeout)
            except TimeoutError:
                log.warning("forcing close of %d connections", len(self.connections()))
        for client in self.connections():
            if client.transport is not None:
                reset(client.transport)
        if self.lot is not None:
            self.lot.close()
            self.lot = None


def refusal(reply: object) -> Reason | None:
    """Why the matchmaker refused a client (``Refuse``); None for a ``BYE``, its own doing."""
    if isinstance(reply, Bye):
        return None
    if isinstance(reply, Error):
        return Reason.UNAVAILABLE if reply.code == ErrorCode.UNAVAILABLE else Reason.FULL
    return Reason.OUTAGE


def start(
    coro: Coroutine[Any, Any, Any],
    done: Callable[[BaseException | None], None],
    pending: set[asyncio.Future[Any]],
) -> None:
    """Run ``coro`` to its end without a Task, then ``done(its exception or None)``.

    ``connect_accepted_socket`` only sets up a transport and awaits the future
    that ``connection_made`` resolves: stepping it by hand on that future's
    callback spares a Task, its first step and its done-callback per client.
    The future is in ``pending`` while awaited (the shutdown waits for them).
    """
    try:
        awaited = coro.send(None)
    except StopIteration:
        done(None)
        return
    except (Exception, asyncio.CancelledError) as exc:  # cancelled: as a Task's was
        done(exc)
        return
    pending.add(awaited)

    def step(future: asyncio.Future[Any]) -> None:
        pending.discard(future)
        start(coro, done, pending)

    awaited.add_done_callback(step)
