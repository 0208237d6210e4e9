"""A WebSocket port's socket: HTTP until the upgrade, then frames around a line client.

The acceptor hands the socket over as any other (tagged ``WS``, or ``WSS``
with ``--tls-cert``: asyncio runs the TLS handshake first). ``Upgrade`` is
its asyncio protocol. Until the upgrade, h11 reads the HTTP request, within
``--ws-handshake-timeout``, and ``workers.webpage`` says what it gets: the
page, a status, or the upgrade, which wsproto answers. From then on wsproto
frames both ways, and the client is an ordinary ``ClientProtocol`` around an
ordinary ``Connection`` in the line dialect, over a ``FrameTransport``:

- in, a text frame is a line: its text, then ``\\n``, goes to the line decoder,
  chunk by chunk as wsproto decodes it, so ``--max-line`` answers a long frame
  with ``ERROR TOO_LONG`` and discards it as it would a long line, holding no
  more of it. A binary frame is a line that is not text: one byte that cannot
  be UTF-8 stands for it, and the decoder answers ``ERROR ENCODING`` in its
  place among the lines. A close frame is the end of the client's input (its
  ``#CLOSE#``, as TCP's EOF).
- out, the core writes whole lines; each goes out as one text frame. Closing
  sends a close frame whose reason is the last line (``BYE``, ``OUTAGE``,
  ``ERROR IDLE`` ...).

Pings go out every ``--ws-ping-interval``; a client that sent nothing, not
even a pong, between two of them is closed (a client whose reading we
paused is not asked). Pongs are not lines: they do not count against
``--idle-timeout``. The WebSocket state lives in this process, so the
client is pinned, as a TLS one: its sessions with clients of other workers
are relayed.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from matchmaker.drops import Reason, dropped, peer_of
from workers import webpage
from workers.protocol import ClientProtocol

if TYPE_CHECKING:
    from matchmaker.config import Config

log = logging.getLogger("workers.websocket")

#: The most bytes of one HTTP request head: a browser's upgrade request is well
#: under 2 KiB with its cookies; h11 answers a longer head with an error (HTTP 400).
MAX_REQUEST = 16384

#: What a binary frame becomes for the line decoder: a byte no UTF-8 text holds.
NOT_TEXT = b"\xff"

#: Close codes (RFC 6455 section 7.4.1) for the last line a client is sent.
NORMAL, GOING_AWAY, POLICY, INTERNAL, TRY_LATER = 1000, 1001, 1008, 1011, 1013
CLOSE_CODES = {
    "BYE": NORMAL,
    "OUTAGE": GOING_AWAY,
    "ERROR FULL": TRY_LATER,
    "ERROR TOO_MANY": TRY_LATER,
    "ERROR UNAVAILABLE": TRY_LATER,
    "ERROR IDLE": POLICY,
    "ERROR SLOW_CONSUMER": POLICY,
}


def close_code(last: str) -> int:
    """The close code for a connection whose last line was ``last``."""
    return CLOSE_CODES.get(last, INTERNAL if last.startswith("ERROR") else NORMAL)


class WebHost(Protocol):
    """What a WebSocket port's socket needs from its worker (``workers.hub.Hub``)."""

    loop: asyncio.AbstractEventLoop
    config: Config
    page: webpage.Page
    upgrading: set[Upgrade]

    def unseat(self, key: int) -> None: ...


class Upgrade(asyncio.Protocol):
    """The asyncio protocol of one WebSocket port socket, from its request to its end."""

    def __init__(self, host: WebHost, key: int, client: ClientProtocol, secure: bool) -> None:
        self.host = host
        self.key = key
        self.client = client  # served once upgraded
        self.secure = secure
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        self.ws: WSConnection | None = None  # once upgraded
        self.transport: asyncio.Transport | None = None
        self.frames: FrameTransport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.pinger: asyncio.TimerHandle | None = None
        self.heard = True  # the client sent something since the last ping
        self.binary = False  # inside a binary message
        self.done = False  # the socket is closed or closing: read nothing more
        self.method = b""  # of the request, once read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.host.upgrading.add(self)
        timeout = self.host.config.ws_handshake_timeout
        self.deadline = self.host.loop.call_later(timeout, self.late)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        if self.ws is None:
            self.request_received(data)
        else:
            self.frames_received(data)

    def eof_received(self) -> bool:
        if self.ws is None or self.frames is None:
            return False
        return self.client.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        for timer in (self.deadline, self.pinger):
            if timer is not None:
                timer.cancel()
        if self.ws is None:  # never a client: only its seat to give back
            self.host.upgrading.discard(self)
            self.host.unseat(self.key)
        else:
            self.client.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.frames is not None:
            self.client.pause_writing()

    def resume_writing(self) -> None:
        if self.frames is not None:
            self.client.resume_writing()

    # ---- HTTP, until the upgrade ------------------------------------------------------

    def request_received(self, data: bytes) -> None:
        http = self.http
        http.receive_data(data)
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            self.refuse(
                webpage.text(400, "400 Bad Request"), (Reason.HANDSHAKE_FAILED, f"not HTTP: {exc}")
            )
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):  # the client closed, or something no request
            self.shut()
            return
        config = self.host.config
        self.method = event.method
        headers = list(event.headers)
        answer = webpage.answer(event.method, event.target, headers, self.host.page,
                                config.ws_origin, self.secure)  # fmt: skip
        if answer is not None:
            self.refuse(answer, answer.drop)
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(headers, event.target)
            for _ in ws.events():  # its Request: nothing in it we have not checked
                pass
        except RemoteProtocolError as exc:
            why = f"bad WebSocket upgrade: {exc}"
            self.refuse(
                webpage.text(400, f"400 Bad Request: {exc}"), (Reason.HANDSHAKE_FAILED, why)
            )
            return
        self.upgraded(ws, ws.send(AcceptConnection()))

    def refuse(self, answer: webpage.Answer, drop: tuple[Reason, str] | None) -> None:
        """Send a plain HTTP answer and close; log a drop for a refused client."""
        transport = self.transport
        assert transport is not None
        if drop is not None:
            dropped(drop[0], 0, self.peer(), drop[1])
        http = self.http
        try:
            phrase = HTTPStatus(answer.status).phrase.encode()
            response = h11.Response(
                status_code=answer.status, headers=answer.headers, reason=phrase
            )
            data = http.send(response) or b""
            if self.method != b"HEAD":
                data += http.send(h11.Data(data=answer.body)) or b""
            data += http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 read too little of a request to answer it
            data = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        transport.write(data)
        self.shut()

    def shut(self) -> None:
        """Close after what was written; the deadline resets one that does not read it."""
        self.done = True
        if self.transport is not None:
            self.transport.close()

    def late(self) -> None:
        """``--ws-handshake-timeout`` passed without a whole request: close without a word."""
        self.deadline = None
        if self.ws is not None:
            return
        if not self.done:
            timeout = self.host.config.ws_handshake_timeout
            why = f"no HTTP request within {timeout:g}s (--ws-handshake-timeout)"
            dropped(Reason.HANDSHAKE_TIMEOUT, 0, self.peer(), why)
        self.done = True
        if self.transport is not None:
            self.transport.abort()

    def stop(self) -> None:
        """The worker stops: a connection not yet upgraded has no id, and is closed at once."""
        self.done = True
        if self.transport is not None:
            self.transport.abort()

    def peer(self) -> str:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return peer_of(sock) if sock is not None else "?"

    # ---- frames, once upgraded -------------------------------------------------------

    def upgraded(self, ws: WSConnection, accept: bytes) -> None:
        """Answer 101 and serve the client: it asks for its id now (``Hub.attach``)."""
        assert self.transport is not None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.host.upgrading.discard(self)
        self.ws = ws
        self.transport.write(accept)
        self.frames = FrameTransport(self, self.transport, ws)
        self.client.connection_made(self.frames)
        self.ping()
        trailing, _closed = self.http.trailing_data
        if trailing:
            self.frames_received(bytes(trailing))

    def frames_received(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        if ws.state is ConnectionState.CLOSED:
            return
        self.heard = True
        ws.receive_data(data)
        lines = bytearray()
        ended: CloseConnection | None = None
        for event in ws.events():
            if isinstance(event, TextMessage):
                lines += event.data.encode()
                if event.message_finished:
                    lines += b"\n"
            elif isinstance(event, BytesMessage):
                if not self.binary:
                    lines += NOT_TEXT
                    self.binary = True
                if event.message_finished:
                    lines += b"\n"
                    self.binary = False
            elif isinstance(event, Ping):
                self.transport.write(ws.send(event.response()))  # type: ignore[union-attr]
            elif isinstance(event, CloseConnection):
                ended = event
            elif not isinstance(event, Pong):  # pragma: no cover - wsproto has no others
                log.debug("unexpected WebSocket event %r", event)
        client = self.client
        if lines and not client.core.closed:
            client.data_received(bytes(lines))
        if ended is not None:
            self.closed_by_peer(ended)

    def closed_by_peer(self, event: CloseConnection) -> None:
        """The client's close frame: the end of its input, as TCP's EOF (its ``#CLOSE#``).

        Answered with our close frame once its last lines are handled (``BYE``). A
        close frame that answers ours ends the connection.
        """
        assert self.ws is not None and self.transport is not None
        if self.ws.state is ConnectionState.CLOSED:  # it answers our close frame
            self.transport.close()
            return
        if self.ws.state is ConnectionState.OPEN and self.frames is not None:
            # no close frame came: wsproto failed the connection for a frame that breaks
            # RFC 6455 (text that is not UTF-8, a bad opcode); ours says why
            self.frames.reason = (event.code, (event.reason or "")[:120])
        if self.client.core.closed:
            self.transport.write(self.ws.send(event.response()))
            self.transport.close()
        else:
            self.client.eof_received()

    def ping(self) -> None:
        """Every ``--ws-ping-interval``: close a client silent since the last ping; ping."""
        self.pinger = None
        ws, client = self.ws, self.client
        if ws is None or ws.state is not ConnectionState.OPEN or client.core.closed:
            return
        if not self.heard and not client.paused:
            interval = self.host.config.ws_ping_interval
            assert self.frames is not None
            self.frames.reason = (GOING_AWAY, "no pong")
            client.close(b"", Reason.NO_PONG, f"no pong within --ws-ping-interval {interval:g}s")
            return
        self.heard = False
        assert self.transport is not None
        self.transport.write(ws.send(Ping()))
        self.pinger = self.host.loop.call_later(self.host.config.ws_ping_interval, self.ping)


class FrameTransport(asyncio.Transport):
    """What the client's ``ClientProtocol`` writes to: lines out as text frames.

    Everything else (flow control, pausing, the socket) is the socket's own
    transport's, so ``--sendq`` and the stall check see the bytes of the frames.
    """

    def __init__(self, upgrade: Upgrade, raw: asyncio.Transport, ws: WSConnection) -> None:
        super().__init__()
        self.upgrade = upgrade
        self.raw = raw
        self.ws = ws
        self.partial = b""  # the start of a line not yet written whole (never, in practice)
        self.last = ""  # the last line sent: the reason in the close frame
        self.reason: tuple[int, str] | None = None  # a close code and reason set by the caller
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        ws = self.ws
        if ws.state is not ConnectionState.OPEN:
            return  # the client sent its close frame: no data frame may follow
        *lines, self.partial = (self.partial + bytes(data)).split(b"\n")
        out = bytearray()
        for line in lines:
            self.last = line.decode(errors="replace")  # lines are UTF-8: never replaced
            out += ws.send(Message(data=self.last))
        if out:
            self.raw.write(bytes(out))

    def close_frame(self) -> None:
        """Send our close frame, once, if the state allows one."""
        ws = self.ws
        if ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closed first
            code, reason = NORMAL, "BYE"
        else:  # a close reason is at most 123 bytes
            code, reason = self.reason or (close_code(self.last), self.last[:120])
        self.raw.write(ws.send(CloseConnection(code=code, reason=reason)))

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_frame()
        self.raw.close()

    def can_write_eof(self) -> bool:
        return self.raw.can_write_eof()

    def write_eof(self) -> None:
        """Our close frame, then TCP's FIN: the client may still send, and is read until its
        close frame (or ``--linger``)."""
        self.closing = True
        self.close_frame()
        self.raw.write_eof()

    def is_closing(self) -> bool:
        return self.closing or self.raw.is_closing()

    def abort(self) -> None:
        self.closing = True
        self.raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits()
