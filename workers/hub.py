"""One worker's clients, and its link to the matchmaker.

The hub routes by key: what the matchmaker says about a key goes to that
client if it is still here, and is dropped if not. Lines between two clients
of this worker are relayed here without a trip through the matchmaker; the
session id on both ends decides whether a line still belongs to a live session.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from ipc import messages as m
from ipc.channel import Sender
from ipc.dialects import Dialect, LineDialect
from ipc.errors import ErrorCode
from matchmaker.config import Config
from workers.migrate import Mover
from workers.moving import Moving
from workers.output import reset
from workers.protocol import ClientProtocol

log = logging.getLogger("workers.hub")

#: Confirming every line would double the matchmaker's traffic; one confirmation
#: per client every 50 ms keeps a sender's unconfirmed lines to what 50 ms carries.
CONFIRM_AFTER = 0.05

#: Bytes of output one client's lines may make in one loop tick (``Hub.tick``):
#: one read's worth (asyncio and uvloop read up to 256 KiB at once), so a stream
#: is passed on a read per tick without pausing the socket in between.
TICK_OUTPUT = 1 << 18

#: TCP keepalive for every client: a peer that vanished without a FIN or RST
#: (power cut, cable pulled) is noticed after IDLE + INTERVAL * COUNT seconds.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6


class Hub:
    """The clients of one worker process, by key."""

    def __init__(
        self,
        index: int,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        outbox: Sender,
        on_count: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.index = index
        self.config = config
        self.loop = loop
        self.outbox = outbox
        self.on_count = on_count  # tells the acceptor how loaded this worker is
        self.linger = config.linger
        # Flow control (ClientProtocol.held). What one client may add to an output in
        # one loop tick (``tick``) before its lines wait for the next; past ``high``
        # bytes waiting in an output its writers are held, until no more than ``low``
        # are left; a sender may have ``window`` bytes of lines to another worker
        # unconfirmed. A tick on top of ``high`` is half of --sendq, so even a partner
        # that pushes a whole window into an output just under it stays under --sendq,
        # and a client's replies and unread input together stay within it.
        sendq = config.sendq
        self.tick = min(sendq // 4, TICK_OUTPUT)
        self.high, self.low = sendq // 2 - self.tick, sendq // 8
        self.window = sendq // 4
        self.congested: set[ClientProtocol] = set()  # output over ``high``, not yet drained
        # Clients gone while their #CLOSE# waits for the matchmaker: a new matchmaker
        # must still hear of them (and of their last lines) until it is answered.
        self.departing: dict[int, ClientProtocol] = {}
        self.clients: dict[int, ClientProtocol] = {}  # attached and not closed, by key
        self.connections: set[ClientProtocol] = set()  # every transport not yet lost
        self.dirty: list[ClientProtocol] = []  # clients with output this tick
        self.unconfirmed: set[ClientProtocol] = set()  # wrote partner lines not yet confirmed
        self._confirm_timer: asyncio.Handle | None = None
        self.stopping = False
        self._keys = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
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

    # ---- connections ------------------------------------------------------------------

    def adopt(self, sock: socket.socket, dialect: Dialect = LineDialect) -> None:
        """Serve a socket the acceptor handed over, in the dialect of the port it came in on."""
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        except OSError:  # already reset by the peer; the transport will see it
            pass
        key = next(self._keys)
        self._serve(sock, lambda: ClientProtocol(self, key, dialect))

    def arrive(self, sock: socket.socket, state: Moving) -> None:
        """Serve a client another worker moved here for ``state.session`` (its socket options
        came along)."""
        sock.setblocking(False)
        if self.stopping:  # too late to serve it: it gets its OUTAGE here and now
            try:
                sock.send(LineDialect.outage())
            except OSError:
                pass
            sock.close()
            return
        key = next(self._keys)
        client = ClientProtocol.arriving(self, key, state)
        self.arriving[key] = state.session
        self.landing[key] = client
        self._serve(sock, lambda: client, client)

    def _serve(
        self,
        sock: socket.socket,
        factory: Callable[[], ClientProtocol],
        moved: ClientProtocol | None = None,
    ) -> None:
        task = self.loop.create_task(self.loop.connect_accepted_socket(factory, sock))
        self._tasks.add(task)
        task.add_done_callback(lambda task: self._adopted(task, sock, moved))

    def _adopted(
        self, task: asyncio.Task[Any], sock: socket.socket, moved: ClientProtocol | None
    ) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not serve a handed-over socket: %s", task.exception())
            sock.close()
            if moved is not None:  # the matchmaker holds its id until told
                session = self.arriving.pop(moved.key, 0)
                self.landing.pop(moved.key, None)
                self.waiting_for.pop(moved.key, None)
                self.to_matchmaker(m.Lost(moved.cid, session))
                # a new matchmaker heard of it in our hello: it holds the id here
                self.to_matchmaker(m.Drop(moved.cid, moved.key))

    def attach(self, client: ClientProtocol) -> None:
        self.connections.add(client)
        session = self.arriving.pop(client.key, None)
        self.landing.pop(client.key, None)
        if self.stopping:
            self.waiting_for.pop(client.key, None)
            client.close(client.dialect.outage())
            return
        self.clients[client.key] = client
        self.on_count(len(self.clients))
        if session is None:
            self.to_matchmaker(m.Register(client.key))
            return
        self._placed(client, session)
        for message in self.waiting_for.pop(client.key, ()):
            self._dispatch[type(message)](message)
        if client.out:
            self.mark_dirty(client)
        client.drain()  # pauses reading while lines wait for the CONNECT's answer

    def detach(self, client: ClientProtocol) -> None:
        """The client is closing or gone: forget it and tell the matchmaker."""
        if self.clients.pop(client.key, None) is not None:
            self.on_count(len(self.clients))
            if client.cid:
                self.to_matchmaker(m.Drop(client.cid, client.key))
            elif client.leaving and client.request is not None:
                self.departing[client.key] = client
        client.writing_paused = False
        self.congested.discard(client)
        if client.local_peer is not None:
            client.local_peer.resume()  # it may have waited for this client to read

    def lost(self, client: ClientProtocol) -> None:
        self.connections.discard(client)
        if not self.connections and self._all_lost is not None:
            self._all_lost.set()

    # ---- lines ---------------------------------------------------------------------------

    def to_matchmaker(self, message: m.ToMatchmaker) -> None:
        if not self.stopping:
            self.outbox.send(message)

    def drained(self, client: ClientProtocol) -> None:
        """``client``'s output has room again: go on with whoever waited for that."""
        client.resume()
        if client.local_peer is not None:
            client.local_peer.resume()
        if client in self.unconfirmed and self._confirm_timer is None:
            self._confirm_timer = self.loop.call_soon(self.confirm)

    def relay(self, client: ClientProtocol, text: str) -> None:
        """A line from ``client`` for its partner: directly if the partner is here."""
        if client.sent is not None:  # the partner is on another worker
            seq = client.sent.add(text)
            self.to_matchmaker(m.Relay(client.cid, client.session, text, seq))
            return
        peer = self.clients.get(client.peer_key)
        if peer is not None and peer.session == client.session:
            peer.write(peer.dialect.msg(text))

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

    def confirm(self) -> None:
        """Tell the senders' workers which lines arrived, so they can send more.

        Not for a client whose output is backed up: its partner's lines then
        wait, unconfirmed, on the partner's worker, and its partner's reading
        pauses (credit-based flow control between the two workers).
        """
        self._confirm_timer = None
        held = set()
        for client in self.unconfirmed:
            if client.writing_paused:
                held.add(client)
            else:
                self._received(client)
        self.unconfirmed = held

    def _received(self, client: ClientProtocol) -> None:
        client.unacked = 0
        if client.session and client.cid:
            self.to_matchmaker(m.Received(client.cid, client.session, client.recv_seq))

    def _welcome(self, msg: m.Welcome) -> None:
        client = self.clients.get(msg.key)
        if client is None:
            self.to_matchmaker(m.Drop(msg.cid, msg.key))  # it left before it got its id
        else:
            client.welcome(msg.cid, msg.since)

    def _answer(self, msg: m.Answer) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.swallow:
            client.swallow -= 1
        elif client is not None:
            client.write(client.dialect.answer(msg.line))
            client.answered()

    def _refuse(self, msg: m.Refuse) -> None:
        self.departing.pop(msg.key, None)
        client = self.clients.get(msg.key)
        if client is not None:
            client.request = None
            client.cid = 0  # refused: its id, if it had one, is not its own (nothing to drop)
            client.close(client.dialect.answer(msg.line))

    def hello(self) -> m.Hello:
        """What a new matchmaker needs to know: every client, every open request, and
        every line to another worker that the old one may have lost (the partners'
        workers drop repeats)."""
        clients: list[m.ClientState] = []
        requests: list[m.ToMatchmakerRequest] = []
        lines: list[m.Relay] = []
        for c in [*self.clients.values(), *self.departing.values(), *self.landing.values()]:
            state, resend = c.resend()
            if state is not None:
                clients.append(state)
                lines += resend
            if c.request is not None:
                requests.append(c.request)
        return m.Hello(tuple(clients), tuple(requests), tuple(lines))

    def _paired(self, msg: m.Paired) -> None:
        client = self.clients.get(msg.key)
        if client is not None:  # else its Drop is on the way and will end the session
            here = self.clients.get(msg.peer_key) if msg.peer_worker == self.index else None
            client.paired(msg, here)

    def _deliver(self, msg: m.Deliver) -> None:
        client = self.clients.get(msg.key)
        if client is None or client.session != msg.session:
            return  # gone, or another session
        self.unconfirmed.add(client)
        if msg.seq <= client.recv_seq:
            return  # sent again after a matchmaker restart: confirmed again, not written
        client.recv_seq = msg.seq
        client.write(client.dialect.msg(msg.text))
        client.unacked += len(msg.text)
        if client.unacked > self.window // 4 and not client.writing_paused:
            self._received(client)  # the sender's window is filling: confirm now

    def _confirm(self, msg: m.Confirm) -> None:
        client = self.clients.get(msg.key)
        if client is not None and client.session == msg.session and client.sent is not None:
            client.sent.confirm(msg.seq)
            client.resume()

    def _move(self, msg: m.Move) -> None:
        client = self.clients.get(msg.key)
        if client is None or client.leaving:
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
            gone = set(self.mover.send(to, group))
            for client, session in group:
                if client in gone:
                    del self.clients[client.key]
                    client.moved()
                else:
                    self._placed(client, session)
        self.on_count(len(self.clients))

    def _placed(self, client: ClientProtocol, session: int) -> None:
        """Tell the matchmaker where a client it asked to move lives now (here, by key)."""
        self.to_matchmaker(m.Placed(client.key, client.cid, session, client.request, client.since))

    def _ended(self, msg: m.Ended) -> None:
        client = self.clients.get(msg.key)
        if client is not None:
            client.ended(msg.session, msg.peer)

    def sweep(self) -> None:
        """Once a second: cut clients idle past ``--idle-timeout``, or stalled past
        ``--stall-timeout`` (output backed up and not read at all); runs itself again."""
        if self.stopping:
            return
        now = self.loop.time()
        config = self.config
        for client in [c for c in self.congested if c.stalled(now, config.stall_timeout)]:
            log.info("client %s: read nothing of its output for %.0fs; cutting it", client.cid,
                     config.stall_timeout)  # fmt: skip
            client.close(client.dialect.error(ErrorCode.SLOW_CONSUMER))
        timeout = config.idle_timeout
        if timeout:
            for client in list(self.clients.values()):
                # a client whose reading is paused (or that waits for an answer) may have
                # sent something nobody read yet: it is not idle
                if client.paused or client.pending:
                    continue
                if now - client.last_seen > timeout:
                    client.close(client.dialect.error(ErrorCode.IDLE))
        interval = min(timeout / 4, 1.0) if timeout else 1.0
        self.loop.call_later(min(interval, config.stall_timeout / 4), self.sweep)

    # ---- shutdown ------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """``OUTAGE`` to every client, then wait for their sockets to close."""
        self.stopping = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for client in list(self.clients.values()):
            client.close(client.dialect.outage())
        if self.connections:
            self._all_lost = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_lost.wait(), timeout)
            except TimeoutError:
                log.warning("forcing close of %d connections", len(self.connections))
        for client in list(self.connections):
            if client.transport is not None:
                reset(client.transport)
