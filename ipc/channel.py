"""The link between one worker and the matchmaker: two ``multiprocessing`` pipes.

Senders collect messages and write them as one batch per event-loop tick, so
a burst of chat lines costs one pickle and one pipe write, not one per line.
Receivers expose their pipe's descriptor so a worker's event loop can wait on
it next to its sockets instead of blocking a thread.

Each pipe has one writer process and one reader process, and both ends are
non-blocking. A batch goes out in frames (``Connection.send_bytes``) that fit
in ``PIPE_BUF``, which a pipe writes whole or not at all: a process killed
mid-batch leaves only whole frames behind, and a full pipe refuses a frame
without taking part of it. A link is never reused once a process at one end
has died: the supervisor makes a fresh one and hands the survivor its ends
(``send_ends``) over the survivor's control socket.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
from collections import deque
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from ipc.fdpass import recv_fds, send_fds

if TYPE_CHECKING:
    import asyncio

#: Most bytes of a batch in one frame. With the marker byte and the 4-byte length
#: ``send_bytes`` puts in front, a frame stays within PIPE_BUF.
CHUNK = 4000
assert CHUNK + 5 <= select.PIPE_BUF

#: First byte of each frame of a batch in several: more of it follows, or this one ends
#: it. A batch that fits in one frame goes as it is: a pickle starts with PROTO (0x80).
MORE, LAST = b"\x00", b"\x01"
WHOLE = pickle.PROTO[0]


class Ends(NamedTuple):
    """One process's two ends of a link."""

    inbox: Connection  # the pipe it reads
    outbox: Connection  # the pipe it writes

    def close(self) -> None:
        self.inbox.close()
        self.outbox.close()


def link() -> tuple[Ends, Ends]:
    """A fresh link: (the worker's ends, the matchmaker's ends)."""
    up_in, up_out = Pipe(duplex=False)  # worker -> matchmaker
    down_in, down_out = Pipe(duplex=False)  # matchmaker -> worker
    return Ends(down_in, up_out), Ends(up_in, down_out)


def send_ends(control: socket.socket, slot: int, ends: Ends) -> None:
    """Pass ``ends`` (of worker ``slot``'s link) to the process at the other end of ``control``.

    Never waits: a full control socket raises ``BlockingIOError``. The caller
    still owns its copies and closes them.
    """
    fds = [ends.inbox.fileno(), ends.outbox.fileno()]
    send_fds(control, fds, slot.to_bytes(4, "big"), wait=False)


def recv_ends(control: socket.socket) -> tuple[int, Ends] | None:
    """The next ``(slot, ends)`` from ``send_ends``; None once the supervisor has gone.

    Raises ``BlockingIOError`` when none waits, and ``fdpass.Dropped`` when
    they came without their descriptors (this process is at its limit).
    """
    got = recv_fds(control, 2, 4)
    if got is None:
        return None
    (inbox, outbox), tag = got
    ends = Ends(Connection(inbox, writable=False), Connection(outbox, readable=False))
    return int.from_bytes(tag, "big"), ends


class Sender:
    """Batches messages for one pipe; ``flush`` writes them as one frame (or a few).

    The frames go into the pipe from the calling thread: no feeder thread, so
    no lock, wake-up and GIL hand-off per batch on the path of every request
    and relayed line. The pipe is non-blocking, so a full pipe never stalls
    the process: what it refuses waits here, in order, and goes out once the
    pipe is writable again (with ``loop``, the event loop watches for that;
    without, the owner checks ``blocked`` and calls ``resume``). When the
    reader has died, what is waiting is dropped: its replacement is told
    everything again on a fresh link.
    """

    __slots__ = ("_conn", "_fd", "_pending", "_frames", "_loop", "_pack", "_watched")

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop | None = None,
        pack: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self._conn = conn
        self._pack = pack  # what a batch becomes before pickling (e.g. plain tuples)
        self._fd = conn.fileno()
        os.set_blocking(self._fd, False)
        self._pending: list[Any] = []
        self._frames: deque[bytes] = deque()  # written in order once the pipe has room
        self._loop = loop  # flushes once at the end of each tick, and waits for room
        self._watched = False  # the loop is watching the pipe for room

    @property
    def blocked(self) -> bool:
        """Frames are waiting for room in the pipe."""
        return bool(self._frames)

    def fileno(self) -> int:
        """Writable when the pipe has room again."""
        return self._fd

    def send(self, message: Any) -> None:
        if not self._pending and self._loop is not None:
            self._loop.call_soon(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []  # a batch that fails to pickle is not retried
        if self._conn.closed:
            return
        if self._pack is not None:
            batch = self._pack(batch)
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        frames = self._frames
        was_blocked = bool(frames)
        end = len(data)
        if end <= CHUNK:
            frames.append(data)
        else:
            for start in range(0, end - CHUNK, CHUNK):
                frames.append(MORE + data[start : start + CHUNK])
            frames.append(LAST + data[(end - 1) // CHUNK * CHUNK :])
        if not was_blocked:
            self.resume()

    def resume(self) -> None:
        """Write waiting frames until the pipe is full or none is left."""
        frames, send = self._frames, self._conn.send_bytes
        while frames:
            try:
                send(frames[0])
            except BlockingIOError:  # nothing of the frame was written
                if self._loop is not None and not self._watched:
                    self._loop.add_writer(self._fd, self.resume)
                    self._watched = True
                return
            except BrokenPipeError:
                self.abandon()
                return
            frames.popleft()
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watched and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._watched = False

    def close(self) -> None:
        """Flush what the pipe takes now, then let go of it: the process is leaving."""
        self.flush()
        self.abandon()

    def abandon(self) -> None:
        """The reader died (or this end is leaving): drop everything not yet written."""
        self._pending = []
        self._frames.clear()
        self._unwatch()
        self._conn.close()


class Receiver:
    """Reads batches from one pipe without blocking, from an event loop or a wait() loop."""

    __slots__ = ("_conn", "_fd", "_parts", "_unpack", "closed")

    def __init__(self, conn: Connection, unpack: Callable[[Any], list[Any]] | None = None) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        self._unpack = unpack  # undoes the sender's ``pack``
        os.set_blocking(self._fd, False)
        self._parts: list[bytes] = []  # pieces of a batch not yet complete
        #: The writer has gone: nothing more will come (the pipe stays readable, at its end).
        self.closed = False

    def fileno(self) -> int:
        """Readable when a frame is waiting, or the writer has gone."""
        return self._fd

    def drain(self) -> list[Any]:
        """Every complete batch waiting now, without blocking (frames are written whole)."""
        batches: list[Any] = []
        parts = self._parts
        recv = self._conn.recv_bytes
        while not self.closed:
            try:
                piece = recv()
            except BlockingIOError:  # nothing waiting: a frame is there whole or not at all
                break
            except (EOFError, OSError):  # the writer died; OSError: closed here
                self.closed = True
                break
            if piece[0] == WHOLE:
                batch = pickle.loads(piece)
            else:
                parts.append(piece[1:])
                if piece[:1] != LAST:
                    continue
                batch = pickle.loads(b"".join(parts))
                parts.clear()
            batches.append(batch if self._unpack is None else self._unpack(batch))
        return batches

    def close(self) -> None:
        self.closed = True
        self._conn.close()
