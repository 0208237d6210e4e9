"""The worker's end of its hand-off channel: sockets from the acceptor, read in batches.

A message carries every connection one port's burst gave this worker
(``ipc.fdpass.send_handoffs``); each socket object is built from the family
the message names, so taking a client costs no system call of its own.

A hand-over that comes without its descriptor (this worker is at its
descriptor limit, so the kernel closed that client's socket) is counted and
read past: only the channel's end stops the reading. Before, one such
hand-over stopped this worker from ever taking another client.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from ipc.fdpass import LEGACY, TLS, WS, WSS, recv_handoffs
from matchmaker.proc import Tally
from wire import dialects
from wire.dialects import Dialect

log = logging.getLogger("workers.handoff")

#: Most hand-overs taken per loop iteration: a burst of new clients must not keep
#: the loop (its clients, its heartbeat) waiting. The channel holds the rest.
BATCH = 256


class HandedSocket(socket.socket):
    """A client socket whose ``family`` and ``type`` read as plain numbers.

    The event loop reads them three times as it takes the socket on, and
    ``socket.socket`` makes an enum member of each read: about 3 us a client
    (cProfile of a worker taking 5,000), for a comparison with a number.
    """

    __slots__ = ()

    # socket.SocketType is the C socket type under socket.socket: its own readers
    family = socket.SocketType.family  # type: ignore[assignment]
    type = socket.SocketType.type  # type: ignore[assignment]


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
        """Take the hand-overs waiting, up to about ``limit`` (None: all; a message is
        taken whole); False once the channel is done."""
        taken = 0
        while limit is None or taken < limit:
            try:
                got = recv_handoffs(self.channel)
            except BlockingIOError:
                return True
            except OSError as exc:
                log.error("hand-off channel failed: %s", exc)
                return False
            if got is None:
                return False
            fds, tag, family, lost = got
            taken += len(fds) + lost
            for _ in range(lost):
                self.counted()
                self.dropped.note()
            dialect = dialects.LEGACY if tag == LEGACY else dialects.LINE
            tls, web = tag in (TLS, WSS), tag in (WS, WSS)
            for i, fd in enumerate(fds):
                sock = None
                try:  # adopted first: the acceptor may count it as the worker's once counted
                    if family:
                        sock = HandedSocket(family, socket.SOCK_STREAM, 0, fileno=fd)
                    else:  # a single hand-over that did not say: the kernel does
                        sock = HandedSocket(fileno=fd)
                    self.adopt(sock, dialect, tls, web)
                except BaseException:
                    if sock is None:
                        os.close(fd)
                    for rest in fds[i + 1 :]:  # never leaked, and still counted
                        os.close(rest)
                        self.counted()
                    raise
                finally:
                    self.counted()
        return True
