"""How the supervisor starts a child: a fork of itself, so that they share the interpreter's pages.

Each child used to be spawned: a fresh interpreter that ran ``site`` and
imported its modules again, about 13 MB of private memory a process before it
served anyone. A forked child shares every page the supervisor holds (the
interpreter, ``site``'s imports, the modules more than one process uses, which
the supervisor loads first: ``matchmaker.roles.preloaded``) until one side writes
to it, and PSS counts such a page once over all of them. ``gc.freeze()`` just
before the fork keeps the child's collector off the objects it inherits
(collecting writes to every object it looks at, and so copies its page); the
supervisor unfreezes its own at once. Just before that it gives the C heap's
free pages back (``matchmaker.proc.trim_heap``): a child's RSS starts with
every page the supervisor has resident, free ones too.

A fork copies more than pages, and the child is made as a spawned one was:

- Descriptors. It keeps only what its ``Spawn`` hands it, the standard streams
  and regular files (the shared memory of ``ipc.load``, which it maps). Every
  other socket, pipe or process descriptor the supervisor held is closed:
  another child's link ends or control socket, a listener that is not its own,
  the supervisor's wakeup pipe. A link end held by a second process would hide
  its owner's death. (``multiprocessing``'s own pipe, by which the supervisor
  sees the child exit, is made during the fork and is not among them.)
- Signals. The supervisor's handlers only queue a signal for its own loop;
  the child starts with the defaults and sets its own (``matchmaker.proc``).
  SIGTERM, SIGINT and SIGHUP are blocked across the fork, so that none reaches
  the supervisor's handlers in the child.
- Threads. A fork copies only the thread that calls it, so no other thread may
  run then (a lock it held would stay held in the child for ever): the
  supervisor pauses the metrics' thread around a fork (``matchmaker.metrics``).

``multiprocessing``'s ``fork`` start method does the rest: the child's exit
status, the sentinel the supervisor waits on, no resource tracker.
"""

from __future__ import annotations

import gc
import os
import signal
import stat
from collections.abc import Callable, Collection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

import setproctitle

from matchmaker.proc import trim_heap

#: Signals the supervisor handles, blocked while it forks.
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: stdin, stdout, stderr: every child has them.
STANDARD = frozenset({0, 1, 2})


def open_fds() -> set[int]:
    """Every descriptor this process holds now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def start(
    ctx: BaseContext,
    name: str,
    target: Callable[..., object],
    args: tuple[object, ...],
    keep: Collection[int],
) -> BaseProcess:
    """Fork a child (``ctx``: the ``fork`` context) titled ``matchmaker: name`` that runs
    ``target(*args)`` holding only the descriptors in ``keep`` of those this process holds
    (and the standard streams)."""
    close = open_fds() - STANDARD - set(keep)
    process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
        target=_child, args=(name, close, target, args), name=name, daemon=False
    )
    trim_heap()
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    gc.freeze()
    try:
        process.start()
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    return process


def _child(
    name: str, close: set[int], target: Callable[..., object], args: tuple[object, ...]
) -> None:
    """In the child: its name (not the supervisor's, even for a moment, in ``ps``), the
    default signal handlers, only its own descriptors, then its role."""
    setproctitle.setproctitle(f"matchmaker: {name}")
    signal.set_wakeup_fd(-1)
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    for fd in close:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    target(*args)
