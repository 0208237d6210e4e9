"""The worker's end of its hand-off channel: sockets from the acceptor, read in batches.

A hand-over that comes without its descriptor (this worker is at its
descriptor limit, so the kernel closed that client's socket) is counted and
read past: only the channel's end stops the reading. Before, one such
hand-over stopped this worker from ever taking another client.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from ipc.fdpass import LEGACY, TLS, WS, WSS, Dropped, recv_tagged
from matchmaker.proc import Tally
from wire import dialects
from wire.dialects import Dialect

log = logging.getLogger("workers.handoff")

#: Most hand-overs taken per loop iteration: a burst of new clients must not keep
#: the loop (its clients, its heartbeat) waiting. The channel holds the rest.
BATCH = 256


class Handoffs:
    """Reads the hand-off channel; each socket goes to ``adopt``, each hand-over is counted.

    ``adopt`` gets the socket, the dialect of its port, whether that port is TLS,
    and whether it is a WebSocket port.
    """

    def __init__(
        self,
        channel: socket.socket,
        adopt: Callable[[socket.socket, Dialect, bool, bool], None],
        counted: Callable[[], None],
    ) -> None:
        self.channel = channel
        self.adopt = adopt
        self.counted = counted  # the acceptor's view of what this worker has taken
        self.dropped = Tally(log, "a hand-over came without its descriptor; client dropped")
        channel.setblocking(False)

    def read(self, limit: int | None = BATCH) -> bool:
        """Take up to ``limit`` waiting hand-overs (None: all); False once the channel is done."""
        taken = 0
        while limit is None or taken < limit:
            try:
                got = recv_tagged(self.channel)
            except BlockingIOError:
                return True
            except Dropped:
                taken += 1
                self.counted()
                self.dropped.note()
                continue
            except OSError as exc:
                log.error("hand-off channel failed: %s", exc)
                return False
            if got is None:
                return False
            fd, tag = got
            taken += 1
            try:  # adopted first: the acceptor may count it as the worker's once counted
                dialect = dialects.LEGACY if tag == LEGACY else dialects.LINE
                tls, web = tag in (TLS, WSS), tag in (WS, WSS)
                self.adopt(socket.socket(fileno=fd), dialect, tls, web)
            finally:
                self.counted()
        return True
