"""Passing an accepted socket from the acceptor to a worker over AF_UNIX.

Each datagram of the SOCK_SEQPACKET pair carries one byte and one file
descriptor. Both ends close what they hold on every error path: a leaked
descriptor here is a client socket nobody will ever close.
"""

from __future__ import annotations

import os
import socket


def handoff_pair() -> tuple[socket.socket, socket.socket]:
    """(acceptor end, worker end) of a new hand-off channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


#: The byte sent with a descriptor: which port the connection came in on.
LINE, LEGACY = b"F", b"L"


def send_fd(channel: socket.socket, fd: int, tag: bytes = LINE) -> None:
    """Send ``fd`` (the caller still owns and must close its copy)."""
    socket.send_fds(channel, [tag], [fd])


def recv_tagged(channel: socket.socket) -> tuple[int, bytes] | None:
    """Receive one descriptor and its tag; None when the channel is closed or carried none.

    Raises ``BlockingIOError`` on a non-blocking channel with nothing waiting.
    """
    msg, fds, _flags, _addr = socket.recv_fds(channel, 1, 4)
    if not fds:
        return None
    for extra in fds[1:]:  # never expected; never leaked either
        os.close(extra)
    # received descriptors are inheritable: a client socket must never leak into a child
    os.set_inheritable(fds[0], False)
    return fds[0], msg


def recv_fd(channel: socket.socket) -> int | None:
    """Like ``recv_tagged``, without the tag."""
    got = recv_tagged(channel)
    return None if got is None else got[0]
