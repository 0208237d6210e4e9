"""The TCP options every client socket carries, set once on each listening socket.

Linux gives an accepted socket its listener's ``TCP_NODELAY`` and keepalive
settings, so the acceptor sets them once per port instead of a worker making
five system calls for every client it adopts (at 100,000 clients, half a
million calls during the connect storm). ``tests/component/test_sockopts.py``
holds the kernel to it.
"""

from __future__ import annotations

import socket

#: Keepalive: a peer that vanished without a FIN (power loss, NAT drop) is found after
#: about IDLE + INTERVAL * COUNT seconds of silence (two minutes), not the kernel's two
#: hours; an idle but alive client answers the probes in the kernel, unseen.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6


def tune(sock: socket.socket) -> None:
    """Lines leave at once (no Nagle delay), and dead peers are found by keepalive."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
