"""A bare Redis connection for the two commands every line across hosts takes.

A line between hosts costs an ``XADD`` on the sender's host and an ``XREADGROUP``
reply on the receiver's. Through redis-py each of them is a connection taken from a
pool and given back, arguments encoded one by one, a timeout task and a reader
coroutine woken for the reply: most of what a cross-host line cost the matchmaker
beyond its socket I/O. Here a command is packed once (the ``XREADGROUP`` once for
good), written with one ``transport.write``, and its reply parsed by hiredis inside
``data_received``, handed to a callback with no task woken in between. Replies come
back in the order the commands went out (RESP guarantees it on one connection), so
each waiting request is simply the oldest one.

Everything else the matchmaker asks of Redis (the scripts, ``GET``'s listing,
trimming) is rarer and stays on redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis

#: what Redis answers instead of a reply (NOGROUP, WRONGTYPE, ...): kept in the list of
#: replies, as redis-py's ``raise_on_error=False`` does
ReplyError = hiredis.ReplyError


def pack(*args: str | bytes | int) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Lane(asyncio.Protocol):
    """One connection; commands pipelined on it, each batch's replies to a callback."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        # per batch sent: its replies so far, how many it wants, what to call with them
        # (None: the connection ended first)
        self.waiting: deque[tuple[list[Any], int, Callable[[list[Any] | None], None]]] = deque()
        self.closed: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.since = time.monotonic()  # the last reply (or the connection), for stalls

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.since = time.monotonic()
        parser = self.parser
        parser.feed(data)
        while True:
            try:
                reply = parser.gets()
            except hiredis.ProtocolError as exc:  # not Redis speaking
                self.abort(exc)
                return
            if reply is False:
                return
            if not self.waiting:
                self.abort(ConnectionError("a reply to nothing asked"))
                return
            replies, count, done = self.waiting[0]
            replies.append(reply)
            if len(replies) == count:
                self.waiting.popleft()
                done(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._end(exc or ConnectionError("Redis closed the connection"))

    def _end(self, why: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        waiting, self.waiting = self.waiting, deque()
        for _, _, done in waiting:
            done(None)

    # ---- use -------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        return self.closed.done()

    @property
    def busy(self) -> bool:
        """Some reply is still to come."""
        return bool(self.waiting)

    def send(self, payload: bytes, count: int, done: Callable[[list[Any] | None], None]) -> None:
        """Write ``count`` packed commands; ``done(replies)`` once all are answered, or
        ``done(None)`` if the connection ends first."""
        if self.transport is None or self.closed.done():
            raise ConnectionError("not connected to Redis")
        if not self.waiting:
            self.since = time.monotonic()  # a stall is counted from here
        self.waiting.append(([], count, done))
        self.transport.write(payload)

    async def ask(self, payload: bytes, count: int) -> list[Any]:
        """``send``, and wait for the replies (or the connection's end)."""
        got: asyncio.Future[list[Any] | None] = asyncio.get_running_loop().create_future()

        def done(replies: list[Any] | None) -> None:
            if not got.done():
                got.set_result(replies)

        self.send(payload, count, done)
        replies = await got
        if replies is None:
            why = self.closed.result()
            raise why if isinstance(why, OSError) else ConnectionError(str(why))
        return replies

    def abort(self, why: BaseException | None = None) -> None:
        """Drop the connection now; what was not answered is lost with it."""
        transport, self.transport = self.transport, None
        self._end(why or ConnectionError("given up on Redis"))
        if transport is not None:
            transport.abort()


async def connect(url: str) -> Lane:
    """A lane to the Redis of ``url`` (``redis://``, ``rediss://`` or ``unix://``, with
    the user, password and database redis-py would take from it), ready for commands.
    The caller bounds the time it takes."""
    parts = urlparse(url)
    loop = asyncio.get_running_loop()
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if parts.scheme == "unix":
        _, lane = await loop.create_unix_connection(Lane, parts.path)
        db = query.get("db", "0")
    elif parts.scheme in ("redis", "rediss"):
        tls = ssl.create_default_context() if parts.scheme == "rediss" else None
        _, lane = await loop.create_connection(
            Lane, parts.hostname or "localhost", parts.port or 6379, ssl=tls
        )
        db = (parts.path or "/").lstrip("/") or query.get("db", "0")
    else:
        raise ValueError(f"not a Redis URL: {url}")
    setup: list[bytes] = []
    if parts.password is not None:
        user = unquote(parts.username) if parts.username else "default"
        setup.append(pack("AUTH", user, unquote(parts.password)))
    if db != "0":
        setup.append(pack("SELECT", db))
    if setup:
        for reply in await lane.ask(b"".join(setup), len(setup)):
            if isinstance(reply, ReplyError):
                lane.abort()
                raise ConnectionError(f"Redis refused the connection's setup: {reply}")
    return lane
