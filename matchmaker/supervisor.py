"""The main process: binds the port, starts every child, watches them, stops them.

It never touches a client socket. Signal handlers only queue the signal (cf.
gunicorn's arbiter); the loop blocks in ``multiprocessing.connection.wait`` on
every child's sentinel plus the ``set_wakeup_fd`` pipe, so a signal or a dead
child is noticed at once. It also wakes every ``BEAT_CHECK`` seconds to look at
the workers' heartbeats: a worker whose event loop is stuck (or stopped) is
alive to its sentinel, so only its silence tells; it is killed and restarted
(cf. gunicorn's ``murder_workers``).

Each worker talks to the matchmaker over a link of two pipes, used by no
other process. When one end dies, the supervisor makes a fresh link at once,
hands the survivor its ends over the survivor's control socket (fd passing)
and starts the replacement with the others: no link outlives a process, and
there is no limit to how often one may be replaced.

Every child reports its counts over its control socket (``ipc.counts``); the
supervisor sums them (``Totals``), serves them with ``--metrics-port``
(``matchmaker.metrics``), and takes each child's first report as its sign that
it serves: once every child has given it, systemd hears ``READY=1``
(``matchmaker.notify``), and ``STOPPING=1`` when the shutdown begins.

Shutdown order: the acceptor first (no new clients), then the workers (each
sends ``OUTAGE`` to its clients and closes them), then the matchmaker; whatever
still runs at the deadline is killed, and every child is reaped.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ipc.channel import Ends, link, send_ends
from ipc.counts import Totals
from ipc.fdpass import handoff_pair, move_pair
from ipc.load import WorkerLoad
from matchmaker import forking, roles
from matchmaker.config import FD_MARGIN, Config
from matchmaker.notify import notify
from matchmaker.proc import setup_logging
from matchmaker.roles import BOOT_ERROR, Spawn

log = logging.getLogger("matchmaker.supervisor")

#: A child that dies after it has booted is always restarted: the server's
#: clients are worth more than a halt. At once for its first QUICK_RESTARTS
#: deaths within RESTART_WINDOW seconds; after more, the restart waits
#: BACKOFF_FIRST seconds, doubling with each death up to BACKOFF_MAX, so a child
#: that dies again and again costs a start a second, not a core. (One that
#: fails while booting exits with BOOT_ERROR, and the server stops instead.)
QUICK_RESTARTS, RESTART_WINDOW = 5, 30.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 1.0

#: How often the supervisor looks at the workers' heartbeats (``ipc.load``).
BEAT_CHECK = 0.5

#: Seconds after the first SIGINT/SIGTERM in which another is taken for the same one.
SIGNAL_DEBOUNCE = 0.25


@dataclass
class Child:
    """A child process and the record it was started with, to start it again."""

    process: BaseProcess
    spawn: Spawn
    restarts: list[float] = field(default_factory=list)  # when it died, within RESTART_WINDOW
    cause: str = ""  # why the supervisor killed it, for the log of its death
    #: when a dead child is to be started again; None while it runs (or its death is unseen)
    due: float | None = None
    #: the supervisor's end of the socket fresh links reach it over (matchmaker, workers)
    control: socket.socket | None = None

    @property
    def role(self) -> str:
        return self.spawn.title

    @property
    def slot(self) -> int:
        """A worker's index; -1 for the others."""
        return self.spawn.slot

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None


def restart_delay(deaths: int) -> float:
    """Seconds to wait before restarting a child that died ``deaths`` times in RESTART_WINDOW."""
    if deaths <= QUICK_RESTARTS:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (deaths - QUICK_RESTARTS - 1))


def describe_exit(code: int | None, cause: str = "") -> str:
    """How a child ended; ``cause`` is why the supervisor killed it, if it did."""
    if code is None:
        return "still running"
    if code < 0:
        name = signal.Signals(-code).name
        if cause:
            return f"killed by {name}: {cause}"
        hint = " (perhaps out of memory?)" if code == -signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


class Supervisor:
    """Starts and watches the acceptor, the matchmaker and the workers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        #: children are forks of this process (``matchmaker.forking``); the shared memory
        #: of ``ipc.load`` comes from this context too
        self.ctx = multiprocessing.get_context("fork")
        self.children: list[Child] = []
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.listener: socket.socket | None = None
        self.legacy_listener: socket.socket | None = None
        self.tls_listener: socket.socket | None = None
        self.ws_listener: socket.socket | None = None
        self.handoff_ends: list[socket.socket] = []
        self.stopping_since = 0.0
        self.load: WorkerLoad | None = None
        self._wakeup_r = -1
        self._checked = 0.0  # when the heartbeats were last looked at
        self.totals = Totals()  # every child's counts, from their reports
        self.restarts: Counter[str] = Counter()  # by role (``worker``), for the metrics
        self.ready = False  # systemd has been told READY=1
        self.metrics: Any = None  # the metrics' HTTP server, with --metrics-port
        #: (title, pid) of this process and every child, for the metrics' thread
        self.pids: tuple[tuple[str, int], ...] = ()

    # ---- start ------------------------------------------------------------------

    def bind(self, port: int) -> socket.socket:
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, port))
        sock.listen(cfg.backlog)
        return sock

    def spawn(self, spawn: Spawn) -> Child:
        control = self._control(spawn)
        child = Child(self._start_process(spawn), spawn, control=control)
        self.children.append(child)
        self._publish_pids()
        return child

    def _publish_pids(self) -> None:
        """Who is running, for the metrics' thread (a new tuple: it reads it at any time)."""
        pids = [(c.role, c.process.pid) for c in self.children if c.process.pid is not None]
        self.pids = (("supervisor", os.getpid()), *pids)

    def _control(self, spawn: Spawn) -> socket.socket | None:
        """A fresh control socket for a child with links, and for the acceptor: the
        supervisor's end. Fresh links go down it; the child's counts come up it."""
        if not spawn.links and spawn.module != roles.ACCEPTOR:
            return None
        ours, spawn.control = handoff_pair()
        return ours

    def _start_process(self, spawn: Spawn) -> BaseProcess:
        with self._threads_paused():
            process = forking.start(
                self.ctx, spawn.title, roles.enter, (spawn.module, spawn), spawn.fds()
            )
        log.debug("started %s (pid %s)", spawn.title, process.pid)
        # The child has its own copies now. Its link ends are its alone, so that its
        # death closes them: the other end sees the end of the pipe, not one kept open here.
        if spawn.control is not None:
            spawn.control.close()
            spawn.control = None
        for ends in spawn.links:
            ends.close()
        spawn.links = []  # a restart gets fresh ones
        return process

    def respawn(self, child: Child) -> None:
        child.process.join()  # reaped already; releases its sentinel
        child.process.close()
        child.cause = ""
        child.due = None
        if child.control is not None:
            child.control.close()
        child.control = self._control(child.spawn)
        child.process = self._start_process(child.spawn)
        self._publish_pids()

    def raise_fd_limit(self) -> None:
        """Take every descriptor the hard limit allows (the children inherit the limit).

        Every client is a descriptor in a worker, and so is every connection of a
        burst beyond ``--max-clients`` until it has been told FULL: a limit of
        just ``--max-clients`` plus a margin let 10,000 clients and a burst
        overrun a worker. The limit is per process, and each worker holds its
        share of the clients (placement spreads them, a move goes to the emptier
        worker): 100,000 clients over 8 workers need 12,756 each, not 100,256.
        """
        cfg = self.config
        need = -(-cfg.max_clients // cfg.workers) + FD_MARGIN
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = max(soft, need) if hard == resource.RLIM_INFINITY else hard
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            log.warning(
                "open-file limit is %d, below the %d that each worker's share of "
                "--max-clients %d over --workers %d needs (more workers, or a higher "
                "LimitNOFILE: docs/DEPLOY.md)",
                target,
                need,
                cfg.max_clients,
                cfg.workers,
            )

    @contextmanager
    def _threads_paused(self) -> Iterator[None]:
        """No thread but this one while the body forks (``matchmaker.forking``): the
        metrics' thread, with ``--metrics-port``, waits meanwhile (its scrapes too)."""
        if self.metrics is None:
            yield
            return
        self.metrics.pause()
        try:
            yield
        finally:
            self.metrics.resume()

    def start(self) -> None:
        cfg = self.config
        self.raise_fd_limit()  # the children inherit it
        for name in roles.preloaded(cfg.workers, cfg.loop):  # once here, not in each child
            try:
                importlib.import_module(name)
            except Exception:  # the child that needs it fails to boot, and says why
                log.debug("not preloaded: %s", name, exc_info=True)
        # plain, then TLS, then WebSocket, then legacy: the first one bound names the host
        # (``--node``)
        if cfg.port is not None:
            self.listener = self.bind(cfg.port)
        if cfg.tls_port is not None:
            self.tls_listener = self.bind(cfg.tls_port)
        if cfg.ws_port is not None:
            self.ws_listener = self.bind(cfg.ws_port)
        if cfg.legacy_port is not None:
            self.legacy_listener = self.bind(cfg.legacy_port)
            # the port bound (``0`` picks one): a worker names it to a legacy client
            # that came to the line port
            port = self.legacy_listener.getsockname()[1]
            cfg = self.config = replace(cfg, legacy_port=port)
        first = next(sock for sock in self._listeners() if sock is not None)
        host, port = first.getsockname()[:2]
        self.load = WorkerLoad(self.ctx, cfg.workers, peers=cfg.max_per_ip > 0)
        pairs = [handoff_pair() for _ in range(cfg.workers)]
        # Each worker's inbox for clients moved to it by the others; kept here
        # across the worker's restarts, like the listening socket.
        moves = [move_pair() for _ in range(cfg.workers)]
        links = [link() for _ in range(cfg.workers)]
        module = roles.MATCHMAKER
        if cfg.redis is not None:
            node = cfg.node or f"{socket.gethostname()}:{port}"
            # one token per run of this host: a restarted matchmaker is the same host
            # (``secrets.token_hex``, without the hashlib that importing ``secrets`` loads)
            cfg = self.config = replace(cfg, node=node, token=os.urandom(8).hex())
            module = roles.CLUSTER
        self.spawn(Spawn("matchmaker", module, cfg, self.load, links=[m for _, m in links]))
        for i in range(cfg.workers):
            self.spawn(
                Spawn(
                    f"worker {i + 1}",
                    roles.WORKER,
                    cfg,
                    self.load,
                    slot=i,
                    handoffs=[pairs[i][1]],
                    links=[links[i][0]],
                    move_inbox=moves[i][0],
                    move_outboxes=[send for _, send in moves],
                )
            )
        self.spawn(
            Spawn(
                "acceptor",
                roles.ACCEPTOR,
                cfg,
                self.load,
                listener=self.listener,
                legacy_listener=self.legacy_listener,
                tls_listener=self.tls_listener,
                ws_listener=self.ws_listener,
                handoffs=[a for a, _ in pairs],
            )
        )
        # The supervisor keeps both ends of every hand-off channel and the listener:
        # a restarted acceptor or worker takes over the same sockets, and the
        # connections queued in a dead worker's channel go to its replacement.
        self.handoff_ends = [end for pair in pairs for end in pair]
        log.info("%d workers, matchmaker and acceptor started", cfg.workers)
        if cfg.metrics_port is not None:
            self.serve_metrics(cfg.metrics_host, cfg.metrics_port)
        # the plain port's line last: whoever waits for it knows the others by then
        for prefix, sock in (("legacy ", self.legacy_listener), ("tls ", self.tls_listener),
                             ("ws ", self.ws_listener), ("", self.listener)):  # fmt: skip
            if sock is not None:
                print(f"{prefix}listening on {host}:{sock.getsockname()[1]}", flush=True)

    def serve_metrics(self, host: str, port: int) -> None:
        """``--metrics-port``: Prometheus's text format at ``/metrics``, from a thread."""
        from matchmaker import metrics  # prometheus_client: only with --metrics-port

        assert self.load is not None
        collector = metrics.Collector(
            self.totals, self.load, lambda: self.pids, lambda: dict(self.restarts)
        )
        self.metrics = metrics.serve(host, port, collector)
        shown = f"[{host}]" if ":" in host else host
        print(f"metrics listening on {shown}:{self.metrics.server_port}", flush=True)

    def _listeners(self) -> tuple[socket.socket | None, ...]:
        return (self.listener, self.tls_listener, self.ws_listener, self.legacy_listener)

    # ---- signals ------------------------------------------------------------------

    def install_signals(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wakeup_r = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._queue_signal)

    def _queue_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.put(signum)  # no logging here: just queue it

    def _pending_signals(self) -> list[int]:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        found = []
        while not self.signals.empty():
            found.append(self.signals.get_nowait())
        return found

    def _wait(self) -> None:
        """Until a signal, a death, the next heartbeat check or the next restart due."""
        timeout = BEAT_CHECK
        dues = [c.due for c in self.children if c.due is not None]
        if dues:
            timeout = max(0.0, min(timeout, min(dues) - time.monotonic()))
        # Every child's sentinel, dead or alive, but for those waiting to restart (whose
        # death is known): filtering by ``alive`` would reap a child that just died
        # and leave its death unseen until the next event.
        sentinels = [c.process.sentinel for c in self.children if c.due is None]
        # their reports too (not of a dead child: its socket at EOF would wake us at once)
        controls = [c.control for c in self.children if c.due is None and c.control is not None]
        multiprocessing.connection.wait([*sentinels, *controls, self._wakeup_r], timeout)

    # ---- reports ------------------------------------------------------------------

    def absorb(self, child: Child) -> None:
        """Take the reports ``child`` has sent (``ipc.counts``); the newest holds its totals."""
        if child.control is None:
            return
        while True:
            try:
                payload = child.control.recv(1 << 16, socket.MSG_DONTWAIT)
            except OSError:  # none waiting (or the socket is gone)
                return
            if not payload:  # it has closed its end: it is dead
                return
            self.totals.take(child.role, payload)

    def check_ready(self) -> None:
        """Tell systemd the server is ready once every child has said it serves."""
        if not self.ready and all(c.role in self.totals.heard for c in self.children):
            self.ready = True
            notify("READY=1")
            log.debug("every child serves")

    # ---- run ----------------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        try:
            self.start()
        except BaseException:
            self.stop(force=True)
            raise
        status = 0
        self._checked = time.monotonic()
        while True:
            self._wait()
            signals = self._pending_signals()
            if signals:
                log.info("%s: shutting down", signal.Signals(signals[0]).name)
                self.stopping_since = time.monotonic()
                break
            for child in self.children:
                if child.due is None:
                    self.absorb(child)
            self.check_ready()
            self.kill_silent_workers()
            if not self.handle_deaths():
                status = BOOT_ERROR
                break
            self.restart_due()
        notify("STOPPING=1")
        self.stop()
        return status

    def handle_deaths(self) -> bool:
        """Schedule the restart of every child that died; False if one failed to boot."""
        for child in self.children:
            if child.alive or child.due is not None:
                continue
            code = child.process.exitcode
            log.error("%s %s", child.role, describe_exit(code, child.cause))
            self.absorb(child)  # its last report; its counts are kept, its gauges go
            self.totals.ended(child.role)
            if code == BOOT_ERROR:
                log.error(
                    "%s failed to start (its log above says why); stopping the server",
                    child.role,
                )
                return False
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW]
            child.restarts.append(now)
            delay = restart_delay(len(child.restarts))
            child.due = now + delay
            if delay:
                log.warning(
                    "%s died %d times in %g s; restarting it in %.1f s",
                    child.role,
                    len(child.restarts),
                    RESTART_WINDOW,
                    delay,
                )
            if child.slot >= 0:
                self._relink_worker(child)
            elif child.spawn.module in (roles.MATCHMAKER, roles.CLUSTER):
                self._relink_matchmaker(child)
        return True

    def restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.due is not None and child.due <= now:
                self.respawn(child)
                self.restarts[child.role.split(" ", 1)[0]] += 1
                log.info("%s restarted (pid %s)", child.role, child.process.pid)

    def kill_silent_workers(self) -> None:
        """SIGKILL each worker whose event loop has not beaten for ``--worker-timeout`` s.

        ``handle_deaths`` then restarts it like any dead worker. One that has not
        beaten yet is still starting and is left alone.
        """
        assert self.load is not None
        now = time.monotonic()
        overslept, self._checked = now - self._checked > BEAT_CHECK + 1.0, now
        if overslept:
            # this process was stopped too (Ctrl-Z stops the whole group): every beat
            # looks old; give the workers a round to beat again
            return
        timeout = self.config.worker_timeout
        for child in self.children:
            last = self.load.beat[child.slot] if child.slot >= 0 else 0.0
            pid = child.process.pid
            if not last or now - last <= timeout or not child.alive or pid is None:
                continue
            child.cause = f"event loop silent for {now - last:.1f}s (--worker-timeout {timeout:g})"
            log.error("%s: %s; killing it", child.role, child.cause)
            self.load.beat[child.slot] = 0.0  # once: the kill takes a moment to be reaped
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- links ----------------------------------------------------------------------

    def _relink_worker(self, worker: Child) -> None:
        """A worker died: a fresh link for its slot, the matchmaker's ends handed over now.

        The matchmaker frees the dead worker's clients when it gets them.
        """
        assert self.load is not None
        self.load.down(worker.slot)
        ours, theirs = link()
        worker.spawn.links = [ours]
        self._hand_over(self._matchmaker(), worker.slot, theirs)

    def _relink_matchmaker(self, matchmaker: Child) -> None:
        """The matchmaker died: a fresh link for every worker, who moves to it and says hello."""
        fresh = [link() for _ in range(self.config.workers)]
        matchmaker.spawn.links = [theirs for _, theirs in fresh]
        for child in self.children:
            if child.slot >= 0:
                self._hand_over(child, child.slot, fresh[child.slot][0])

    def _hand_over(self, child: Child, slot: int, ends: Ends) -> None:
        """Pass ``child`` its ``ends`` of ``slot``'s fresh link over its control socket.

        One waiting to be restarted is started with them. One that has died
        unseen gets a fresh link when its death is handled. One whose control
        socket is full (it has not read it for hundreds of links) cannot be told,
        and is killed, to be restarted with one.
        """
        if child.due is not None:
            at = slot if child.slot < 0 else 0  # the matchmaker's ends are by slot
            child.spawn.links[at], old = ends, child.spawn.links[at]
            old.close()
            return
        try:
            if child.alive and child.control is not None:
                send_ends(child.control, slot, ends)
        except BlockingIOError:
            log.error("%s takes no fresh link to the matchmaker; killing it", child.role)
            child.cause = "it took no fresh link"
            child.process.kill()
        except OSError:
            pass  # it is dead: its own restart links it afresh
        finally:
            ends.close()

    def _matchmaker(self) -> Child:
        return next(c for c in self.children if c.spawn.module in (roles.MATCHMAKER, roles.CLUSTER))

    def stop(self, force: bool = False) -> None:
        """Stop every child in order, kill what is left at the deadline, reap all."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        if self.metrics is not None:
            self.metrics.close()  # its thread; a scrape under way finishes first
        for listener in self._listeners():
            if listener is not None:
                listener.close()
        for end in self.handoff_ends:
            end.close()
        order = ("acceptor", "worker", "matchmaker")
        for role in order:
            group = [c for c in self.children if c.role.startswith(role)]
            if force:
                break
            for child in group:
                if child.alive:
                    child.process.terminate()
            # leave the matchmaker its own second of the deadline
            stage_end = deadline - (0.0 if role == "matchmaker" else 1.0)
            force = not self._join(group, stage_end)
            log.debug("%s stage done (%s)", role, "forced" if force else "clean")
        for child in self.children:
            if child.alive:
                log.warning("%s did not stop in time; killing it", child.role)
                child.process.kill()
        for child in self.children:
            child.process.join()
            if child.due is None and child.process.exitcode not in (0, None):
                log.info("%s %s", child.role, describe_exit(child.process.exitcode))
        if self.children:  # a port that could not be bound started nothing: its error alone
            log.info("stopped")

    def _second_signal(self) -> bool:
        """A signal soon after the first is the same one delivered twice (``timeout(1)``
        signals the command and its process group), not a person asking again."""
        return time.monotonic() - self.stopping_since > SIGNAL_DEBOUNCE

    def _join(self, group: list[Child], until: float) -> bool:
        """Wait for ``group`` to exit; False if the time ran out or a second signal came."""
        while True:
            # One look at who is alive per round: a child reaped between two looks
            # would leave its sentinel out of the wait, which then sleeps to the deadline.
            alive = [c for c in group if c.alive]
            if not alive:
                return True
            left = until - time.monotonic()
            if left <= 0:
                return False
            multiprocessing.connection.wait(
                [*(c.process.sentinel for c in alive), self._wakeup_r], left
            )
            if self._pending_signals() and self._second_signal():
                log.warning("second signal: killing every child now")
                return False


def run(config: Config) -> int:
    setup_logging(config.log_level, config.log_format, "supervisor")
    return Supervisor(config).run()
