"""Per-process samples of a running server: memory, CPU, descriptors, threads, clients.

A thread samples the supervisor and every process below it with psutil,
once a second for the soak. Processes are named by their title
(``matchmaker: worker 1``, set with setproctitle, read back from the command
line), since a restarted child gets a new pid but keeps its title. With
``ports=True`` it also notes which worker holds each client connection, so a
test can tell sessions across workers from sessions within one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil

PREFIX = "matchmaker: "


@dataclass(frozen=True, slots=True)
class Sample:
    """One process at one moment."""

    #: seconds since the sampler started
    at: float
    title: str
    pid: int
    rss: int
    #: percent of one core since the previous sample of this process
    cpu: float
    fds: int
    threads: int


def title(p: psutil.Process) -> str:
    """``matchmaker: worker 1`` and the like; the command line for anything else."""
    try:
        text = " ".join(p.cmdline()).strip()  # setproctitle pads argv with blanks
    except psutil.Error:
        return ""
    if text.startswith(PREFIX):
        return text
    if "resource_tracker" in text:
        return "resource tracker"
    if "multiprocessing" in text:  # spawned, not yet at its setproctitle (a restart)
        return "a child still starting"
    return text[:40]


def server_processes(pid: int) -> list[psutil.Process]:
    """The supervisor ``pid`` and everything it started."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Sampler:
    """Samples the server under ``pid`` every ``interval`` seconds from a thread."""

    pid: int
    interval: float = 1.0
    ports: bool = False
    samples: list[Sample] = field(default_factory=list)
    #: client port -> title of the worker that held it
    placement: dict[int, str] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.sample()  # primes cpu_percent, and gives the baseline
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):  # the sampling period, not a synchronisation
            self.sample()

    def sample(self) -> list[Sample]:
        """Sample every live server process now; also returned."""
        now = time.monotonic() - self._t0
        taken = []
        for fresh in server_processes(self.pid):
            p = self._procs.setdefault(fresh.pid, fresh)
            try:
                with p.oneshot():
                    name = title(p)
                    s = Sample(
                        now,
                        name,
                        p.pid,
                        p.memory_info().rss,
                        p.cpu_percent(None),
                        p.num_fds(),
                        p.num_threads(),
                    )
                if self.ports and name.startswith(PREFIX + "worker"):
                    for conn in p.net_connections("tcp"):
                        if conn.raddr:
                            self.placement[conn.raddr.port] = name
            except psutil.Error:
                continue  # it exited between listing and sampling
            taken.append(s)
        self.samples.extend(taken)
        return taken


def by_title(samples: list[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by process title, in time order."""
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.title, []).append(s)
    return out
