"""Chaos for the soak: kill and stop the server's children at random, and say what was done.

A thread picks one of the supervisor's children by its title (``matchmaker:
worker 1``, ``matchmaker: matchmaker``, ``matchmaker: acceptor``; never the
supervisor, never anything else) every few seconds and either kills it
(SIGKILL) or stops it (SIGSTOP, then SIGCONT after a short pause). It is seeded,
bounded in actions and in time, and stops by itself; a stopped process always
gets its SIGCONT, also when the soak is interrupted or fails.

Before a kill the process is stopped and its TCP connections are listed, so the
soak knows exactly which clients the kill cut (``Action.ports``): the only
connections that may end without a word. The supervisor restarts a killed
child every time, so the chaos needs no budget of kills.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil

from scripts.sampler import PREFIX, server_processes, title

ROLES = ("worker", "matchmaker", "acceptor")
SIGNALS = ("kill", "stop")


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    """What the chaos may do, how often, and for how long."""

    seed: int = 1
    #: seconds between two actions (drawn between the two)
    interval: tuple[float, float] = (2.0, 4.0)
    #: seconds a stopped process stays stopped: a worker stopped for longer than a few
    #: seconds holds up the acceptor's hand-over to it
    pause: tuple[float, float] = (0.2, 2.0)
    #: at most this many actions, and none later than ``duration`` seconds after the start
    actions: int = 12
    duration: float = 60.0
    roles: tuple[str, ...] = ROLES
    signals: tuple[str, ...] = SIGNALS
    #: a child younger than this may still be starting: it is left alone
    min_age: float = 2.0
    #: names the server among several (the soak's ``--hosts``): each draws its own
    #: actions from the same seed; empty for the one server, as before
    host: str = ""


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the chaos did."""

    #: seconds since the chaos started
    at: float
    #: ``time.monotonic()`` when it hit: matched against connections' open spans
    clock: float
    #: ``kill`` or ``stop``
    what: str
    title: str
    pid: int
    #: kill: the peer ports of the TCP connections the process held (the clients' own ports)
    ports: frozenset[int] = frozenset()
    #: stop: seconds it stayed stopped
    paused: float = 0.0
    #: anything that went wrong (the process was gone, ...)
    note: str = ""

    def __str__(self) -> str:
        name = self.title.removeprefix(PREFIX)
        if self.what == "kill":
            done = f"kill {name} (pid {self.pid}), {len(self.ports)} client connections"
        else:
            done = f"stop {name} (pid {self.pid}) for {self.paused:.2f} s"
        return f"{self.at:6.1f} s  {done}{'; ' + self.note if self.note else ''}"


def role(name: str) -> str:
    """``worker`` for ``matchmaker: worker 2``; ``matchmaker``, ``acceptor``."""
    return name.removeprefix(PREFIX).split(" ")[0]


@dataclass
class Chaos:
    """Runs a ``ChaosPlan`` against the server whose supervisor is ``pid``, from a thread."""

    pid: int
    plan: ChaosPlan
    actions: list[Action] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stopped: set[psutil.Process] = field(default_factory=set)  # SIGSTOPped, not yet continued
    #: re-entrant: ``halt`` may run in a signal handler while this thread holds it
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _t0: float = 0.0

    def __post_init__(self) -> None:
        host = f"/{self.plan.host}" if self.plan.host else ""
        self._rng = random.Random(f"chaos/{self.plan.seed}{host}")

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """No more actions, and every stopped child continued now; safe in a signal handler."""
        self._halt.set()
        self._continue_all()

    def stop(self) -> None:
        """End the chaos now: cut a pause short, continue whatever is stopped, wait."""
        self.halt()
        if self._thread is not None:
            self._thread.join()
        self._continue_all()

    def _run(self) -> None:
        plan = self.plan
        try:
            while len(self.actions) < plan.actions:
                wait = self._rng.uniform(*plan.interval)
                if time.monotonic() + wait > self._t0 + plan.duration:
                    return
                if self._halt.wait(wait):  # the pace of the chaos, not a synchronisation
                    return
                self._act()
        finally:
            self._continue_all()

    def _act(self) -> None:
        what = self._rng.choice(self.plan.signals)
        targets = self._targets()
        if not targets:
            return
        p = self._rng.choice(targets)
        if what == "kill":
            self._kill(p)
        else:
            self._stop(p, self._rng.uniform(*self.plan.pause))

    def _targets(self) -> list[psutil.Process]:
        """The children the plan allows, started a while ago, in a stable order."""
        now = time.time()
        found = []
        for p in server_processes(self.pid)[1:]:
            try:
                if p.ppid() != self.pid or now - p.create_time() < self.plan.min_age:
                    continue
                name = title(p)
            except psutil.Error:
                continue
            if not name.startswith(PREFIX) or role(name) not in self.plan.roles:
                continue
            found.append((name, p))
        return [p for _, p in sorted(found, key=lambda x: x[0])]

    def _kill(self, p: psutil.Process) -> None:
        """SIGKILL, after listing the connections it holds (stopped, so it takes no more)."""
        name = title(p)
        ports: frozenset[int] = frozenset()
        note = ""
        try:
            p.send_signal(signal.SIGSTOP)
            ports = frozenset(c.raddr.port for c in p.net_connections("tcp") if c.raddr)
        except psutil.Error as exc:
            note = f"could not list its connections: {exc!r}"
        finally:
            clock = time.monotonic()
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error as exc:
                note = f"gone before the kill: {exc!r}"
        self.actions.append(Action(clock - self._t0, clock, "kill", name, p.pid, ports, note=note))

    def _stop(self, p: psutil.Process, pause: float) -> None:
        """SIGSTOP, then SIGCONT after ``pause`` seconds (sooner if the chaos ends)."""
        name = title(p)
        clock = started = time.monotonic()
        note = ""
        try:
            with self._lock:
                p.send_signal(signal.SIGSTOP)
                self._stopped.add(p)
            self._halt.wait(pause)  # how long it stays stopped: the point of the action
        except psutil.Error as exc:
            note = f"gone: {exc!r}"
        finally:
            self._continue(p)
        paused = time.monotonic() - started
        self.actions.append(
            Action(clock - self._t0, clock, "stop", name, p.pid, paused=paused, note=note)
        )

    def _continue(self, p: psutil.Process) -> None:
        with self._lock:
            self._stopped.discard(p)
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass  # it died meanwhile

    def _continue_all(self) -> None:
        with self._lock:
            stopped = list(self._stopped)
        for p in stopped:
            self._continue(p)

    def summary(self) -> list[str]:
        kills = sum(a.what == "kill" for a in self.actions)
        stops = len(self.actions) - kills
        head = f"chaos: {len(self.actions)} actions ({kills} kills, {stops} stops)"
        return [head, *(f"  {a}" for a in self.actions)]
