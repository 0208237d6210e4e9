"""Moving a client's socket to the worker of its partner, and taking such clients in.

When a session forms across two workers, the matchmaker asks one of them to
hand its client over: the socket goes by fd passing, with what the worker
knows of the client (its id, its waiting request and lines, the part of a line
not yet ended). The pair is then relayed inside one process, and its lines
never cross a queue. A move that cannot happen at once (the socket still has
bytes to send, the receiver is gone or full) does not happen: the client
stays, and the session is relayed through the matchmaker as before.

Only this server's workers may hand over clients: a datagram is taken only
from a process of the same user whose parent is this worker's parent.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from typing import TYPE_CHECKING, Any

from ipc.fdpass import MAX_MOVE_FDS, move_address, move_inbox, move_outbox, recv_move, send_move

if TYPE_CHECKING:
    from workers.hub import Hub
    from workers.protocol import ClientProtocol

log = logging.getLogger("workers.migrate")


def parent_of(pid: int) -> int:
    """The parent pid of ``pid`` from /proc, or -1 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return -1
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


class Mover:
    """This worker's end of the moves: sends clients to its siblings, takes theirs in."""

    def __init__(self, hub: Hub, group: int) -> None:
        self.hub = hub
        self.group = group  # the supervisor's pid: names this server's workers
        self.outbox = move_outbox()
        self.inbox: socket.socket | None = None

    def listen(self) -> socket.socket | None:
        """Bind this worker's name; None (and moves here are refused) if that fails."""
        try:
            self.inbox = move_inbox(move_address(self.group, self.hub.index))
        except OSError as exc:
            log.error("cannot take clients from other workers: %s", exc)
        return self.inbox

    def send(self, to: int, moving: list[tuple[ClientProtocol, int]]) -> list[ClientProtocol]:
        """Hand clients (with their sessions) to worker ``to``; returns those that went.

        A tick's clients for one worker go in as few datagrams as fit. Those
        that cannot go (the receiver is restarting, or its queue is full) are
        left untouched: they stay, and their sessions are relayed.
        """
        sent: list[ClientProtocol] = []
        address = move_address(self.group, to)
        for start in range(0, len(moving), MAX_MOVE_FDS):
            group = moving[start : start + MAX_MOVE_FDS]
            fds = []
            for client, _ in group:
                transport = client.transport
                sock = transport.get_extra_info("socket") if transport is not None else None
                fds.append(sock.fileno() if sock is not None else -1)
            if -1 in fds:  # never expected: a client to move has a live transport
                continue
            states = [(session, client.export()) for client, session in group]
            try:
                payload = pickle.dumps(states, pickle.HIGHEST_PROTOCOL)
                send_move(self.outbox, address, payload, fds)
            except OSError as exc:
                log.info("%d clients stay on worker %d: %s", len(group), self.hub.index + 1, exc)
                continue
            sent.extend(client for client, _ in group)
        return sent

    def receive(self) -> None:
        """Take in every client waiting on the inbox."""
        inbox, hub = self.inbox, self.hub
        assert inbox is not None
        while True:
            try:
                payload, fds, pid, uid = recv_move(inbox)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("move inbox failed: %s", exc)
                return
            if not fds:
                continue
            states = self._states(payload, pid, uid)
            if states is None or len(states) != len(fds):
                if states is not None:
                    log.error("%d clients' states came with %d sockets", len(states), len(fds))
                for fd in fds:
                    os.close(fd)
                continue
            for fd, (session, state) in zip(fds, states, strict=True):
                hub.arrive(socket.socket(fileno=fd), session, state)

    def _states(self, payload: bytes, pid: int, uid: int) -> list[tuple[int, Any]] | None:
        if uid != os.getuid() or parent_of(pid) != self.group or not payload:
            log.warning("refused descriptors from pid %d (uid %d)", pid, uid)
            return None
        try:
            states: list[tuple[int, Any]] = pickle.loads(payload)
        except Exception:
            log.exception("unreadable client states from pid %d", pid)
            return None
        return states

    def close(self) -> None:
        self.outbox.close()
        if self.inbox is not None:
            self.inbox.close()
