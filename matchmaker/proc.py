"""What every child process does first, the flag its blocking loop checks, and its logging.

Children ignore SIGINT: Ctrl-C in a terminal reaches the whole process group,
and the supervisor alone decides the order of the shutdown. SIGTERM from the
supervisor is the child's cue to stop. A child that fails before it serves
says so with its exit status (``booting``), so that the supervisor stops the
server instead of restarting it into the same failure.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import setproctitle

from matchmaker import logs
from matchmaker.roles import BOOT_ERROR


def setup_logging(level: str, fmt: str = "text", title: str | None = None) -> None:
    """``--log-level`` and ``--log-format`` for this process (``matchmaker.logs``)."""
    logs.setup(level, fmt, title)


def child_setup(title: str, log_level: str, log_format: str = "text") -> int:
    """Name the process, set up logging, ignore SIGINT; returns the parent's pid."""
    setproctitle.setproctitle(f"matchmaker: {title}")
    setup_logging(log_level, log_format, title)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return os.getppid()


#: The collector's first threshold in the processes that hold objects for every client
#: (the workers and the matchmaker). At CPython's 700 a burst of new clients, all of them
#: long-lived, set off a full collection of every client a process held each time their
#: number grew by a quarter: three in each worker while 100,000 clients connected, 0.1 s
#: each, about a fifth of the server's CPU per connected client (docs/PERFORMANCE.md,
#: "Round three"). At 10,000 such a burst passes between two full collections; a
#: collection of the young generation takes 2 ms at most, of the middle one up to 30 ms
#: in a burst of 9,000 clients in one process (each of those full ones took 0.1 s).
GC_THRESHOLD = 10_000


def collect_less() -> None:
    """Young collections less often (``GC_THRESHOLD``), the older generations as before."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


@contextmanager
def booting(title: str) -> Iterator[None]:
    """Around what a child does before it serves: any failure there exits with ``BOOT_ERROR``.

    The supervisor stops the server on that status. A failure at this point
    (a setting the child cannot run with, a module that does not load) would
    only repeat at every restart.
    """
    try:
        yield
    except Exception:
        logging.getLogger("matchmaker.proc").exception("%s failed to start", title)
        sys.exit(BOOT_ERROR)


def exit_on_sigterm() -> None:
    """For a child blocked in a system call: SIGTERM ends it at once with status 0.

    The acceptor and the matchmaker hold nothing that must be flushed at
    shutdown (the workers tell the clients), so they need no graceful path.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's copy may follow
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handle)


class Tally:
    """Counts an event that floods come in, and logs it at most once per ``interval`` seconds.

    A descriptor flood repeats one failure thousands of times a second; a line
    every few seconds with the count says as much, and keeps the log (and the
    process writing it) usable.
    """

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval: float = 5.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.message, self.interval, self.level = logger, message, interval, level
        self.clock = clock
        self.count = 0  # since the last line logged
        self._logged = -interval

    def note(self) -> None:
        self.count += 1
        now = self.clock()
        if now - self._logged >= self.interval:
            self.logger.log(self.level, "%s (%d since last logged)", self.message, self.count)
            self.count = 0
            self._logged = now


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's ``malloc_trim``).

    The interpreter frees what it no longer uses into the heap, where its pages stay
    in the process's RSS until reused. Before a fork that matters twice over: every
    resident page of the supervisor is in every child's RSS from the start (about
    1 MB a child after the imports and the configuration). Where the C library has
    no ``malloc_trim`` (musl), or the interpreter no ``ctypes``, nothing happens.
    """
    try:
        import ctypes  # about 0.1 MB, shared with the children

        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (ImportError, OSError):  # an interpreter built without ctypes: keep the pages
        return
    if trim is not None:
        trim(0)
