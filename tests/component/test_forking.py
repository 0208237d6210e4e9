"""A forked child holds what it was given and nothing else of the supervisor's.

Spawned children got their descriptors one by one; a fork copies all of them,
and the supervisor's signal handlers and wakeup pipe too. A link end left open
in another child would hide its owner's death from the other end.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys

import setproctitle

from matchmaker import forking

CTX = multiprocessing.get_context("fork")
TIMEOUT = 10.0


def report(out: socket.socket, other: int) -> None:
    """In the child: whether ``other`` is open, SIGTERM's handler, the wakeup fd, the title."""
    try:
        os.fstat(other)
        held = "open"
    except OSError:
        held = "closed"
    handler = "default" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else "other"
    wakeup = signal.set_wakeup_fd(-1)
    out.sendall(f"{held} {handler} {wakeup} {setproctitle.getproctitle()}".encode())


def test_the_child_keeps_only_its_descriptors_and_the_default_handlers():
    ours, theirs = socket.socketpair()  # the child's
    other, other_peer = socket.socketpair()  # another child's, say
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    old_wakeup = signal.set_wakeup_fd(w)
    try:
        child = forking.start(CTX, "probe 1", report, (theirs, other.fileno()), [theirs.fileno()])
    finally:
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGTERM, previous)
    theirs.close()
    ours.settimeout(TIMEOUT)
    assert ours.recv(200).decode() == "closed default -1 matchmaker: probe 1"
    child.join(TIMEOUT)
    assert child.exitcode == 0
    for s in (ours, other, other_peer):
        s.close()
    os.close(r)
    os.close(w)


def exits(code: int) -> None:
    sys.exit(code)


def test_the_exit_status_is_the_childs():
    child = forking.start(CTX, "exits 3", exits, (3,), [])
    child.join(TIMEOUT)
    assert child.exitcode == 3


def test_the_supervisors_own_descriptors_stay_open_in_the_supervisor():
    a, b = socket.socketpair()
    child = forking.start(CTX, "exits 0", exits, (0,), [])
    child.join(TIMEOUT)
    a.sendall(b"x")  # closed in the child only
    assert b.recv(1) == b"x"
    a.close()
    b.close()
