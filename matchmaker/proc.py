"""What every child process does first, and the flag its blocking loop checks.

Children ignore SIGINT: Ctrl-C in a terminal reaches the whole process group,
and the supervisor alone decides the order of the shutdown. SIGTERM from the
supervisor is the child's cue to stop.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

import setproctitle

#: Exit status of a child that failed before it could serve: the supervisor
#: halts rather than restart it into the same failure.
BOOT_ERROR = 3

LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format=LOG_FORMAT)


def child_setup(title: str, log_level: str) -> int:
    """Name the process, set up logging, ignore SIGINT; returns the parent's pid."""
    setproctitle.setproctitle(f"matchmaker: {title}")
    setup_logging(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return os.getppid()


def exit_on_sigterm() -> None:
    """For a child blocked in a system call: SIGTERM ends it at once with status 0.

    The acceptor and the matchmaker hold nothing that must be flushed at
    shutdown (the workers tell the clients), so they need no graceful path.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's copy may follow
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handle)
