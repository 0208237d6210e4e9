"""Moving a client's socket to the worker of its partner, and taking such clients in.

When a session forms across two workers, the matchmaker asks one of them to
hand its client over: the socket goes by fd passing, with what the worker
knows of the client (its id, its waiting request and lines, the part of a line
not yet ended). The pair is then relayed inside one process, and its lines
never cross a queue. A move that cannot happen at once (the receiver's queue
is full) does not happen: the client stays, and the session is relayed
through the matchmaker as before.

Every worker has an inbox, one end of a datagram socket pair that the
supervisor made and keeps; all workers hold every pair's sending end.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from typing import Protocol

from ipc import messages as m
from ipc.fdpass import MAX_MOVE_FDS, recv_move, send_move
from workers.moving import Moving

log = logging.getLogger("workers.migrate")


class Destination(Protocol):
    """Where the clients that arrive go: the worker's ``workers.hub.Hub``."""

    index: int

    def arrive(self, sock: socket.socket, state: Moving) -> None: ...
    def to_matchmaker(self, message: m.ToMatchmaker) -> None: ...


class Mover:
    """This worker's end of the moves: sends clients to its siblings, takes theirs in."""

    def __init__(
        self, hub: Destination, inbox: socket.socket, outboxes: list[socket.socket]
    ) -> None:
        self.hub = hub
        self.inbox = inbox
        self.outboxes = outboxes  # by worker index
        for sock in (inbox, *outboxes):
            sock.setblocking(False)

    def send(self, to: int, moving: list[tuple[int, Moving]]) -> list[bool]:
        """Hand clients (their sockets' descriptors and states) to worker ``to``; says
        which went.

        A tick's clients for one worker go in as few datagrams as fit. Those
        that cannot go (the receiver's queue is full) are left untouched: they
        stay, and their sessions are relayed.
        """
        went: list[bool] = []
        for start in range(0, len(moving), MAX_MOVE_FDS):
            group = moving[start : start + MAX_MOVE_FDS]
            fds = [fd for fd, _ in group]
            ok = -1 not in fds  # never expected: a client to move has a live socket
            if ok:
                try:
                    payload = pickle.dumps([state for _, state in group], pickle.HIGHEST_PROTOCOL)
                    send_move(self.outboxes[to], payload, fds)
                except OSError as exc:
                    log.info("%d clients stay on worker %d: %s", len(group), self.hub.index + 1,
                             exc)  # fmt: skip
                    ok = False
            went += [ok] * len(group)
        return went

    def receive(self) -> None:
        """Take in every client waiting in the inbox."""
        hub = self.hub
        while True:
            try:
                payload, fds = recv_move(self.inbox)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("move inbox failed: %s", exc)
                return
            states = _states(payload)
            if states is None or len(states) != len(fds):
                log.error("%d sockets came with unusable states; closing them", len(fds))
                for fd in fds:
                    os.close(fd)
                for state in states or []:  # their ids must not stay taken
                    hub.to_matchmaker(m.Lost(state.cid, state.session))
                continue
            for fd, state in zip(fds, states, strict=True):
                hub.arrive(socket.socket(fileno=fd), state)


def _states(payload: bytes) -> list[Moving] | None:
    try:
        states: list[Moving] = pickle.loads(payload)
    except Exception:
        log.exception("unreadable client states")
        return None
    return states
