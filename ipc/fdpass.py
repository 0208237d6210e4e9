"""Passing descriptors between processes over AF_UNIX.

Client sockets from the acceptor to a worker, and from one worker to another
when a session forms across the two (so the pair is then relayed inside one
process); and the two pipe ends of a fresh link from the supervisor to the
process that outlived the other end of the old one (``ipc.channel.send_ends``).

A hand-off (SOCK_SEQPACKET pair) carries the connections one port accepted
for one worker in a burst: a tag byte, their address family and their count,
and the descriptors (``send_handoffs``); a link's ends go as the worker's
index and two descriptors; a move (a datagram on the receiving worker's pair)
carries the clients' states and their descriptors. Both ends close what they
hold on every error path: a leaked descriptor here is a client socket nobody will ever close.
"""

from __future__ import annotations

import array
import errno
import os
import socket
from typing import NamedTuple


def handoff_pair() -> tuple[socket.socket, socket.socket]:
    """(acceptor end, worker end) of a new hand-off channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


#: The byte sent with a descriptor: which port the connection came in on (protocol v1,
#: the legacy dialect, protocol v1 over TLS, WebSocket, WebSocket over TLS).
LINE, LEGACY, TLS, WS, WSS = b"F", b"L", b"T", b"W", b"S"


class Dropped(Exception):
    """A hand-over arrived without its descriptor; the channel itself is fine, read on.

    Either the receiver is at its descriptor limit (``MSG_CTRUNC``: the kernel
    closed the descriptor it could not install, so that client is gone), or the
    message carried none.
    """


def send_fd(channel: socket.socket, fd: int, tag: bytes = LINE, *, wait: bool = True) -> None:
    """Send ``fd`` (the caller still owns and must close its copy).

    With ``wait=False`` a full channel raises ``BlockingIOError`` at once
    instead of blocking until its reader catches up (which a stopped reader never does).
    """
    send_fds(channel, [fd], tag, wait=wait)


def send_fds(channel: socket.socket, fds: list[int], tag: bytes, *, wait: bool = True) -> None:
    """Send ``fds`` with ``tag`` in one message; like ``send_fd``."""
    rights = array.array("i", fds)
    flags = 0 if wait else socket.MSG_DONTWAIT  # socket.send_fds drops its flags (3.11)
    channel.sendmsg([tag], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], flags)


def recv_tagged(channel: socket.socket) -> tuple[int, bytes] | None:
    """Receive one descriptor and its tag; None only when the channel is closed.

    Raises ``Dropped`` for a hand-over without its descriptor, and
    ``BlockingIOError`` on a non-blocking channel with nothing waiting.
    """
    got = recv_fds(channel, 1, 1)
    return None if got is None else (got[0][0], got[1])


def recv_fds(channel: socket.socket, count: int, size: int) -> tuple[list[int], bytes] | None:
    """Receive a message of ``count`` descriptors and a tag of ``size`` bytes, as ``recv_tagged``.

    A message with fewer descriptors raises ``Dropped`` (those that came are closed).
    """
    msg, fds, flags, _addr = socket.recv_fds(channel, size, count + 3)
    for extra in fds[count:]:  # never expected; never leaked either
        os.close(extra)
    if len(fds) < count:
        for fd in fds:
            os.close(fd)
        if not msg and not fds:  # every message has a tag: an empty read is the end of the channel
            return None
        if flags & socket.MSG_CTRUNC:
            raise Dropped("descriptor limit reached")
        raise Dropped(f"{len(fds)} of {count} descriptors in the message")
    # received descriptors are inheritable: a client socket must never leak into a child
    for fd in fds[:count]:
        os.set_inheritable(fd, False)
    return fds[:count], msg


#: Most descriptors one hand-off message carries (Linux takes up to 253, SCM_MAX_FD):
#: the acceptor's batch of accepts (``matchmaker.acceptor.ACCEPT_BATCH``) at most.
MAX_HANDOFF_FDS = 64


class Handed(NamedTuple):
    """One hand-off message: the descriptors that came, their port's tag, their address
    family (0: not said, as in a ``send_fd`` message), and how many did not come."""

    fds: list[int]
    tag: bytes
    family: int
    lost: int


def send_handoffs(
    channel: socket.socket, fds: list[int], tag: bytes, family: int, *, wait: bool = True
) -> None:
    """Send connections accepted on one port in one message, as ``send_fd``.

    One message for a burst's connections to one worker saves a system call
    and a wake-up per connection on both sides. The family lets the worker
    build each socket object without asking the kernel what it is.
    """
    if not 0 < len(fds) <= MAX_HANDOFF_FDS:
        raise ValueError(f"1 to {MAX_HANDOFF_FDS} descriptors a message, not {len(fds)}")
    send_fds(channel, fds, tag + bytes((family, len(fds))), wait=wait)


def recv_handoffs(channel: socket.socket) -> Handed | None:
    """Receive one hand-off message (``send_handoffs`` or ``send_fd``); None only when the
    channel is closed.

    The descriptors arrive close-on-exec (a client socket must never leak into
    a child), without a system call each. Those the message names that did not
    come (the receiver is at its descriptor limit: ``MSG_CTRUNC``, and the
    kernel closed them; or none was sent) are ``lost``, for the caller to count.
    Raises ``BlockingIOError`` on a non-blocking channel with nothing waiting.
    """
    space = socket.CMSG_SPACE(4 * (MAX_HANDOFF_FDS + 3))  # socket.recv_fds drops its flags (3.11)
    msg, ancdata, _flags, _addr = channel.recvmsg(3, space, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    if not msg and not fds:  # every message has a tag: an empty read is the end of the channel
        return None
    family, count = (msg[1], msg[2]) if len(msg) >= 3 else (0, 1)
    for extra in fds[count:]:  # never expected; never leaked either
        os.close(extra)
    del fds[count:]
    return Handed(fds, msg[:1] or LINE, family, count - len(fds))


# ---- moving a client between workers -------------------------------------------------

#: Most bytes of client state, and most clients, one datagram moves. A receiving
#: socket holds only 10 datagrams (net.unix.max_dgram_qlen), so the clients a
#: worker sends one sibling in a loop tick go together.
MAX_MOVE, MAX_MOVE_FDS = 65536, 64


def move_pair() -> tuple[socket.socket, socket.socket]:
    """(inbox, sending end) of one worker's channel for clients moved to it.

    Datagrams, so that every worker can send on the one sending end and each
    move arrives whole. Made by the supervisor, which keeps both ends for the
    life of the server: no other process can reach them, and moves that were
    on their way to a worker that died wait for its replacement.
    """
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def send_move(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """Send ``payload`` and copies of ``fds`` in one datagram; raises OSError if not sent whole.

    The receiver takes at most ``MAX_MOVE_FDS`` descriptors and ``MAX_MOVE`` bytes at once.
    """
    if len(payload) > MAX_MOVE or len(fds) > MAX_MOVE_FDS:
        raise OSError(errno.EMSGSIZE, "too much to move at once")
    send_fds(sock, fds, payload)


def recv_move(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One datagram: ``(payload, descriptors)``.

    The descriptors are not inheritable. A datagram cut short (``MSG_TRUNC``)
    comes with an empty payload; one whose descriptors did not all fit (the
    receiver is at its descriptor limit, ``MSG_CTRUNC``) comes with fewer
    descriptors than its payload names, and the caller must close what came.
    Raises ``BlockingIOError`` when none waits.
    """
    payload, ancdata, flags, _addr = sock.recvmsg(MAX_MOVE, socket.CMSG_SPACE(4 * MAX_MOVE_FDS))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    for fd in fds:
        os.set_inheritable(fd, False)
    if flags & socket.MSG_TRUNC:
        payload = b""
    return payload, fds
