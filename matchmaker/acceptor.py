"""The acceptor process: accept TCP connections, hand each to a worker.

It never reads a client socket (cf. gunicorn's design: "the arbiter never
touches individual client sockets"): it accepts, passes the descriptor to a
worker over that worker's Unix socket, and closes its own copy.

It never waits on one worker either: a hand-over that would block (that
worker's channel is full: it is stopped, stuck or swamped) goes to the next
worker, and a client no worker makes room for within ``HOLD`` is told FULL
and closed; a worker whose event loop has gone silent gets no new client
while another beats. One stuck worker used to stop the whole server's intake.

Before a hand-over it asks ``matchmaker.admission`` whether the client's
address may have one more connection (``--max-per-ip``, ``--accept-rate``);
one that may not is told TOO_MANY and closed, with one line in the log.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import socket
import time
from collections.abc import Callable

from ipc import sockopts
from ipc.counts import COUNTS
from ipc.fdpass import LEGACY, LINE, TLS, WS, WSS, send_fd, send_handoffs
from ipc.load import SILENT_AFTER, WorkerLoad
from ipc.peers import address_key
from matchmaker.admission import Admission
from matchmaker.drops import Reason, dropped, peer_of
from matchmaker.proc import Tally, booting, child_setup, exit_on_sigterm
from matchmaker.roles import Spawn
from wire import dialects
from wire.errors import ErrorCode
from wire.replies import Error

log = logging.getLogger("matchmaker.acceptor")

#: accept() errors that mean "out of a resource for now": back off, don't spin.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: accept() errors that belong to one connection, not the listener: accept(2) says to
#: retry on these (Linux passes a pending network error of the new socket up).
_CONNECTION_ERRORS = {
    errno.ECONNABORTED,
    errno.EPROTO,
    errno.ENETDOWN,
    errno.ENOPROTOOPT,
    errno.EHOSTDOWN,
    errno.ENONET,
    errno.EHOSTUNREACH,
    errno.EOPNOTSUPP,
    errno.ENETUNREACH,
    errno.EPERM,  # a firewall rule refused it
}
#: How long to back off when out of descriptors or memory; clients wait in the
#: listen backlog meanwhile, and are served once the shortage ends.
BACKOFF = 0.1

#: Out of descriptors for this long, the shortage is no passing one: the spare
#: descriptor (``Reserve``) takes the waiting clients one by one to refuse them
#: with FULL, rather than leave them hanging in the backlog with no answer.
SHED_AFTER = 5.0

#: Longest the acceptor sleeps with nothing to accept.
WAKE = 0.5

#: Connections accepted per listener per wake-up while more are waiting: a burst
#: (100,000 clients connecting at 20,000 a second) is taken without a ``select`` and
#: the housekeeping around it per client, and still no listener waits on another long.
ACCEPT_BATCH = 64

#: Most connections handed to one worker and not yet taken by it that a batch may add
#: to. A hand-off channel holds about 280 messages, one connection each before
#: batches; of up to ``ACCEPT_BATCH`` each it would hold some 18,000, all waiting
#: on a worker that has stopped reading until it is passed over (``SILENT_AFTER``)
#: or replaced. Past this bound a batch's connections go one message each, as
#: before, and a channel that does not take them sends them on to the next worker.
MAX_UNTAKEN = 4 * ACCEPT_BATCH

#: When no worker it may use takes a client at once, how long the acceptor waits
#: for one of their channels to make room before it refuses the client. A worker
#: takes up to 256 hand-overs per loop iteration, so a burst bigger than its
#: channel (about 280) clears in milliseconds; new connections wait in the
#: listen backlog meanwhile, the queue they belong in.
HOLD = 0.5

#: A worker's standing in ``Placement``: its loop beats; it is up but silent; it is down.
BEATING, SILENT, DOWN = 0, 1, 2


class Placement:
    """Chooses which workers may take the next connection, best first.

    Only workers whose event loop beats, while any does: one up but silent
    (stopped, stuck, swamped) would keep a client waiting until it recovers
    or is replaced, and one down until its replacement runs. ``least-loaded``
    counts each worker's live clients plus the sockets handed to it that it
    has not picked up yet, so a burst of connections spreads out even before
    the workers report; ties go round robin.
    """

    def __init__(
        self, policy: str, load: WorkerLoad, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.load = load
        self.clock = clock
        # a restarted acceptor starts from what the workers have picked up
        self.handed = list(load.received)
        self._next = 0
        self.silent: set[int] = set()  # workers passed over, as last logged

    def order(self) -> list[int]:
        """The beating workers best first; if none beats, every worker (silent before down)."""
        n = len(self.handed)
        now = self.clock()
        rotation = [(self._next + step) % n for step in range(n)]
        standing = {i: self.standing(i, now) for i in rotation}

        def rank(i: int) -> tuple[int, int]:
            busy = 0 if self.policy == "round-robin" else self.in_hand(i)
            return (standing[i], busy)

        ranked = sorted(rotation, key=rank)  # stable: ties keep the round-robin rotation
        return [i for i in ranked if standing[i] == BEATING] or ranked

    def plan(self, count: int) -> list[int]:
        """The worker each of ``count`` connections goes to, first to last: ``order()[0]``
        before each, as if each were ``placed`` there in turn (the standings read once)."""
        n = len(self.handed)
        now = self.clock()
        standing = [self.standing(i, now) for i in range(n)]
        best = min(standing)
        if self.policy == "round-robin":  # the best standing's workers, in turn from ``_next``
            turn = [(self._next + step) % n for step in range(n)]
            ring = [i for i in turn if standing[i] == best]
            return [ring[j % len(ring)] for j in range(count)]
        busy = [self.in_hand(i) for i in range(n)]
        start, chosen = self._next, []
        for _ in range(count):
            pick = min(
                ((start + step) % n for step in range(n)),
                key=lambda i: (standing[i], busy[i]),  # first of the least: round robin ties
            )
            chosen.append(pick)
            busy[pick] += 1
            start = (pick + 1) % n
        return chosen

    def standing(self, i: int, now: float) -> int:
        if not self.load.up[i]:
            return DOWN
        return BEATING if now - self.load.beat[i] < SILENT_AFTER else SILENT

    def in_hand(self, i: int) -> int:
        return int(self.load.live[i] + self.untaken(i))

    def untaken(self, i: int) -> int:
        """Connections handed to worker ``i`` that it has not taken from its channel yet."""
        return int(self.handed[i] - self.load.received[i])

    def placed(self, worker: int, count: int = 1) -> None:
        self._next = (worker + 1) % len(self.handed)
        self.handed[worker] += count

    def review(self) -> None:
        """Log each worker that falls silent, and each that beats again."""
        now = self.clock()
        for i in range(len(self.handed)):
            standing = self.standing(i, now)
            if standing == SILENT and i not in self.silent:
                self.silent.add(i)
                silent_for = now - self.load.beat[i]
                log.warning(
                    "passing worker %d over: its event loop has been silent for %.1fs",
                    i + 1,
                    silent_for,
                )
            elif standing != SILENT and i in self.silent:
                self.silent.discard(i)
                if standing == BEATING:
                    log.info("worker %d beats again: it takes new clients", i + 1)


class Reserve:
    """One descriptor kept spare for when the acceptor has no other (EMFILE).

    Without it a connection that cannot be accepted stays in the backlog and the
    listener stays readable: the acceptor can only retry, and every client
    behind waits with no answer. With it one connection is accepted, told FULL
    and closed, and the spare taken back (the trick libev's documentation gives).
    """

    def __init__(self) -> None:
        self.fd = self._take()

    @staticmethod
    def _take() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def shed(self, listener: socket.socket, tag: bytes) -> bool:
        """Refuse one waiting connection on the spare descriptor; False if none could be had."""
        if self.fd is None:
            self.fd = self._take()
            if self.fd is None:
                return False
        os.close(self.fd)
        self.fd = None
        try:
            conn, _addr = listener.accept()
        except OSError:
            self.fd = self._take()
            return False
        with conn:
            full(conn, tag, f"out of descriptors for {SHED_AFTER:g}s")
            refuse(conn, tag)
        self.fd = self._take()  # the client's descriptor is free again
        return True


#: What a refused connection of a WebSocket port is told: it speaks HTTP until its
#: upgrade, so the refusal is an HTTP status with the error line as its text.
HTTP_REFUSAL = {
    ErrorCode.FULL: "503 Service Unavailable",
    ErrorCode.TOO_MANY: "429 Too Many Requests",
}


def full(conn: socket.socket, tag: bytes, why: str) -> None:
    """The log line and the counts of a client about to be refused FULL (``refuse``)."""
    if tag not in (TLS, WSS):
        COUNTS.errors[ErrorCode.FULL.value] += 1
    dropped(Reason.FULL, 0, peer_of(conn), why)


def refuse(conn: socket.socket, tag: bytes, code: ErrorCode = ErrorCode.FULL) -> None:
    """Tell the client ``code`` in its port's dialect without waiting; the caller closes it.

    A client of a TLS port is closed without a word: the handshake is a
    worker's, and plain text would only break it. One of the WebSocket port
    gets an HTTP answer (it has sent a request, or is about to).
    """
    if tag in (TLS, WSS):
        return
    if tag == WS:
        line = Error(code).line()
        status = HTTP_REFUSAL.get(code, "503 Service Unavailable")
        head = f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(line) + 1}"
        data = f"HTTP/1.1 {status}\r\n{head}\r\nConnection: close\r\n\r\n{line}\n".encode()
    else:
        data = (dialects.LEGACY if tag == LEGACY else dialects.LINE).render(Error(code))
    try:
        conn.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass  # gone already, or its buffer is full: it only misses the reason


class Intake:
    """Accepts a connection and hands it to a worker, or refuses it; never waits on one."""

    def __init__(
        self,
        handoffs: list[socket.socket],
        placement: Placement,
        admission: Admission | None = None,
    ) -> None:
        self.handoffs = handoffs
        self.placement = placement
        self.admission = admission  # per-address limits; None: there are none
        self.placed_on = -1  # the worker the last hand-over went to
        self.reserve = Reserve()
        self.hold = HOLD
        self.refused = Tally(log, "no worker's hand-off channel has room: client refused (FULL)")
        self.shed = Tally(
            log, f"accept: out of descriptors for {SHED_AFTER:g}s: client refused (FULL)"
        )
        self.backoffs: dict[int, Tally] = {}
        self.short_since: float | None = None  # out of descriptors since
        self.short: OSError | None = None  # out of a resource, once the batch is handed over
        self.shed_after = SHED_AFTER

    def accept(self, listener: socket.socket, tag: bytes) -> bool:
        """Take one waiting connection; whether there may be more to take at once."""
        batch: list[tuple[socket.socket, bytes | None]] = []
        more = self._accept(listener, tag, batch)
        for conn, peer in batch:
            with conn:
                self._hand_over_one(conn, tag, peer)
        return more

    def take(self, listener: socket.socket, tag: bytes, limit: int = ACCEPT_BATCH) -> bool:
        """Take up to ``limit`` waiting connections, then hand them over together
        (``hand_over_many``); whether there may be more to take at once."""
        batch: list[tuple[socket.socket, bytes | None]] = []
        try:
            more = True
            while more and len(batch) < limit:
                more = self._accept(listener, tag, batch)
            if batch:
                self.hand_over_many(batch, tag, listener.family)
        finally:
            for conn, _ in batch:
                conn.close()
        if self.short is not None:
            exc, self.short = self.short, None
            self.back_off(listener, tag, exc)
        return more

    def _accept(
        self, listener: socket.socket, tag: bytes, batch: list[tuple[socket.socket, bytes | None]]
    ) -> bool:
        """Accept one connection into ``batch`` with its address key (None without
        ``admission``), or refuse it; whether there may be more to take at once."""
        try:
            conn, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _EXHAUSTED:
                if batch:  # what it holds is handed over (its descriptors freed) first
                    self.short = exc
                else:
                    self.back_off(listener, tag, exc)
                return False
            if exc.errno not in _CONNECTION_ERRORS:
                raise
            return True  # that one connection failed; the next may be fine
        self.short_since = None
        admission = self.admission
        if admission is None:
            batch.append((conn, None))
            return True
        try:
            peer = address_key(addr[0])
            refused = admission.refusal(peer, time.monotonic())
        except BaseException:
            conn.close()
            raise
        if refused is None:
            batch.append((conn, peer))
            return True
        with conn:
            reason, why = refused
            if tag not in (TLS, WSS):
                COUNTS.errors[ErrorCode.TOO_MANY.value] += 1
            dropped(reason, 0, shown(addr), f"{why}: ERROR TOO_MANY")
            refuse(conn, tag, ErrorCode.TOO_MANY)
        return True

    def back_off(self, listener: socket.socket, tag: bytes, exc: OSError) -> None:
        """Out of a resource: wait a moment, or refuse a client if descriptors ran out long ago."""
        assert exc.errno is not None
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            now = time.monotonic()
            if self.short_since is None:
                self.short_since = now
            if now - self.short_since >= self.shed_after and self.reserve.shed(listener, tag):
                self.shed.note()
                return
        if exc.errno not in self.backoffs:
            what = f"accept: {exc.strerror}; backing off {BACKOFF:g}s, clients wait in the backlog"
            self.backoffs[exc.errno] = Tally(log, what)
        self.backoffs[exc.errno].note()
        time.sleep(BACKOFF)

    def hand_over(self, conn: socket.socket, tag: bytes) -> bool:
        """Pass ``conn`` to the first worker in the placement's order that takes it.

        A worker whose channel is full is skipped. When none takes it at once,
        the acceptor waits up to ``hold`` seconds for one to make room (all of
        them, never one), then refuses the client. The caller closes its copy.
        """
        workers = self.placement.order()
        if self._offer(conn, tag, workers):
            return True
        if self._room(workers) and self._offer(conn, tag, workers):
            return True
        self.refused.note()
        full(conn, tag, "no worker's hand-off channel has room")
        refuse(conn, tag)
        return False

    def _hand_over_one(self, conn: socket.socket, tag: bytes, peer: bytes | None) -> None:
        """``hand_over``, and the hand-over noted for ``admission`` (``peer`` given)."""
        if self.hand_over(conn, tag) and peer is not None:
            assert self.admission is not None
            worker = self.placed_on
            self.admission.handed(worker, self.placement.handed[worker], peer)

    def hand_over_many(
        self, batch: list[tuple[socket.socket, bytes | None]], tag: bytes, family: int
    ) -> None:
        """Hand over connections of one port: those the placement gives one worker go in
        one message. A worker whose channel does not take its message gets none of them:
        each then goes as ``hand_over`` sends one (the next worker, ``hold``, FULL)."""
        plan = self.placement.plan(len(batch))
        groups: dict[int, list[int]] = {}
        for i, worker in enumerate(plan):
            groups.setdefault(worker, []).append(i)
        left: list[int] = []
        for worker, members in groups.items():
            if self.placement.untaken(worker) + len(members) > MAX_UNTAKEN:
                left += members  # one by one, each its own message (``hand_over``)
                continue
            fds = [batch[i][0].fileno() for i in members]
            try:
                send_handoffs(self.handoffs[worker], fds, tag, family, wait=False)
            except BlockingIOError:
                left += members
                continue
            except OSError as exc:
                log.error("could not hand connections to worker %d: %s", worker + 1, exc)
                left += members
                continue
            self.placement.placed(worker, len(members))
            self.placed_on = worker
            if self.admission is not None:
                seq = self.placement.handed[worker] - len(members)
                for n, i in enumerate(members, 1):
                    peer = batch[i][1]
                    assert peer is not None
                    self.admission.handed(worker, seq + n, peer)
        if not left:
            self.placement.placed(plan[-1], 0)  # the next turn follows the last connection's
            self.placed_on = plan[-1]
            return
        for i in sorted(left):
            conn, peer = batch[i]
            self._hand_over_one(conn, tag, peer)

    def _offer(self, conn: socket.socket, tag: bytes, workers: list[int]) -> bool:
        for worker in workers:
            try:
                send_fd(self.handoffs[worker], conn.fileno(), tag, wait=False)
            except BlockingIOError:
                continue
            except OSError as exc:
                log.error("could not hand a connection to worker %d: %s", worker + 1, exc)
                continue
            self.placement.placed(worker)
            self.placed_on = worker
            return True
        return False

    def _room(self, workers: list[int]) -> bool:
        """Wait up to ``hold`` seconds for any of ``workers``' channels to take a message."""
        poll = select.poll()
        for worker in workers:
            poll.register(self.handoffs[worker], select.POLLOUT)
        return bool(poll.poll(self.hold * 1000))


def shown(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """A peer address as people write it: ``1.2.3.4:5``, ``[::1]:5``."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(
    listeners: dict[socket.socket, bytes],
    intake: Intake,
    parent: int,
    control: socket.socket | None = None,
) -> None:
    """Accept on every listener until SIGTERM, or until the supervisor is gone.

    ``listeners`` maps each listening socket to the tag its connections carry
    to the worker (the protocol v1 port, its TLS port, the WebSocket port, or the
    legacy port).
    The counts for the metrics go to the supervisor over ``control``.
    """
    with selectors.DefaultSelector() as selector:
        for listener, tag in listeners.items():
            listener.setblocking(False)
            sockopts.tune(listener)  # every socket accepted on it inherits them
            selector.register(listener, selectors.EVENT_READ, tag)
        COUNTS.report(control, force=True)  # the supervisor's sign that the acceptor serves
        while os.getppid() == parent:
            COUNTS.report(control)
            # wakes to notice a dead supervisor and a silent worker
            for key, _ in selector.select(timeout=WAKE):
                # while more wait, up to a batch, handed over together
                intake.take(key.fileobj, key.data)  # type: ignore[arg-type]
            intake.placement.review()
            if intake.admission is not None:
                intake.admission.tidy(time.monotonic())


def main(spawn: Spawn) -> None:
    """Entry point of the acceptor process (spawned by the supervisor)."""
    with booting(spawn.title):
        parent = child_setup(spawn.title, spawn.config.log_level, spawn.config.log_format)
        exit_on_sigterm()
        config, load = spawn.config, spawn.load
        admission = None
        if config.max_per_ip or config.accept_rate:
            admission = Admission(config.max_per_ip, config.accept_rate, load.peers, load.received)
        intake = Intake(spawn.handoffs, Placement(config.placement, load), admission)
        web = WSS if config.tls_cert is not None else WS  # --tls-cert makes it wss://
        tags = {spawn.listener: LINE, spawn.tls_listener: TLS, spawn.legacy_listener: LEGACY,
                spawn.ws_listener: web}  # fmt: skip
        listeners = {sock: tag for sock, tag in tags.items() if sock is not None}
    serve(listeners, intake, parent, spawn.control)
