"""The acceptor process: accept TCP connections, hand each to a worker.

It never reads a client socket (cf. gunicorn's design: "the arbiter never
touches individual client sockets"): it accepts, passes the descriptor to a
worker over that worker's Unix socket, and closes its own copy.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import sys
import time

from ipc.fdpass import LEGACY, LINE, send_fd
from ipc.load import WorkerLoad
from matchmaker.proc import BOOT_ERROR, child_setup, exit_on_sigterm

log = logging.getLogger("matchmaker.acceptor")

#: accept() errors that mean "out of a resource for now": back off, don't spin.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: How long to back off when out of descriptors; clients wait in the listen backlog.
BACKOFF = 0.1


class Placement:
    """Picks the worker for the next connection.

    ``least-loaded`` counts each worker's live clients plus the sockets handed to
    it that it has not picked up yet, so a burst of connections spreads out even
    before the workers report; ties go round robin.
    """

    def __init__(self, policy: str, load: WorkerLoad) -> None:
        self.policy = policy
        self.load = load
        # a restarted acceptor starts from what the workers have picked up
        self.handed = list(load.received)
        self._next = 0

    def choose(self) -> int:
        """The next worker; one that is down is passed over while any other is up."""
        n = len(self.handed)
        start = self._next
        load, up = self.load, self.load.up
        candidates = [(start + step) % n for step in range(n)]
        candidates = [i for i in candidates if up[i]] or candidates
        if self.policy == "round-robin":
            best = candidates[0]
        else:
            best = min(candidates, key=lambda i: load.live[i] + self.handed[i] - load.received[i])
        self._next = (best + 1) % n
        self.handed[best] += 1
        return best


def serve(
    listeners: dict[socket.socket, bytes],
    handoffs: list[socket.socket],
    placement: Placement,
    parent: int,
) -> None:
    """Accept on every listener until SIGTERM, or until the supervisor is gone.

    ``listeners`` maps each listening socket to the tag its connections carry
    to the worker (the protocol v1 port, or the legacy port).
    """
    with selectors.DefaultSelector() as selector:
        for listener, tag in listeners.items():
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, tag)
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):  # wakes to notice a dead supervisor
                accept_one(key.fileobj, key.data, handoffs, placement)  # type: ignore[arg-type]


def accept_one(
    listener: socket.socket, tag: bytes, handoffs: list[socket.socket], placement: Placement
) -> None:
    try:
        conn, _addr = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        if exc.errno in _EXHAUSTED:
            log.warning("accept: %s; backing off %.1fs", exc.strerror, BACKOFF)
            time.sleep(BACKOFF)
            return
        if exc.errno == errno.ECONNABORTED:
            return
        raise
    with conn:
        worker = placement.choose()
        try:
            send_fd(handoffs[worker], conn.fileno(), tag)
        except OSError as exc:
            log.error("could not hand a connection to worker %d: %s", worker + 1, exc)


def main(
    log_level: str,
    policy: str,
    listener: socket.socket,
    legacy_listener: socket.socket | None,
    handoffs: list[socket.socket],
    load: WorkerLoad,
) -> None:
    """Entry point of the acceptor process (spawned by the supervisor)."""
    try:
        parent = child_setup("acceptor", log_level)
        exit_on_sigterm()
        placement = Placement(policy, load)
    except Exception:
        log.exception("acceptor failed to start")
        sys.exit(BOOT_ERROR)
    listeners = {listener: LINE}
    if legacy_listener is not None:
        listeners[legacy_listener] = LEGACY
    serve(listeners, handoffs, placement, parent)
