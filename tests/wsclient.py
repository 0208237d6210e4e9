"""A blocking WebSocket client on wsproto, for the tests: protocol v1 lines as text frames.

The server's own library on the other side, over a plain socket, so that a test
can send what a browser would not (binary frames, frames past ``--max-line``,
no ``Origin``, a request cut short). It also carries the browser tests'
DevTools link to Chromium, which is a WebSocket too.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections import deque

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

TIMEOUT = 10.0


class Rejected(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode(errors='replace').strip()}")
        self.status = status
        self.body = body


class WsClient:
    """One WebSocket connection; ``line`` returns each text frame the server sent."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ws",
        origin: str | None = None,
        tls: ssl.SSLContext | None = None,
        name: str = "localhost",
        timeout: float = TIMEOUT,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=name)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.texts: deque[str] = deque()
        self.partial = ""
        self.closed: CloseConnection | None = None  # the server's close frame, once it came
        self.eof = False
        self.id = 0  # once welcomed
        headers = [(b"origin", origin.encode())] if origin is not None else []
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path,
                                               extra_headers=headers)))  # fmt: skip
        status, body = 0, b""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._read(deadline):
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        self.sock.close()
                        raise Rejected(status, body)
            if self.eof:
                raise Rejected(status, body)

    def _read(self, deadline: float) -> list[object]:
        """One read's events; [] at EOF (``eof`` set). Raises TimeoutError at ``deadline``."""
        left = deadline - time.monotonic()
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and (left <= 0 or not select.select([self.sock], [], [], left)[0]):
            raise TimeoutError("nothing from the server in time")
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            self.ws.receive_data(None)
        else:
            self.ws.receive_data(data)
        events: list[object] = list(self.ws.events())
        for event in events:
            if isinstance(event, TextMessage):
                self.partial += event.data
                if event.message_finished:
                    self.texts.append(self.partial)
                    self.partial = ""
            elif isinstance(event, Ping) and self.ws.state is ConnectionState.OPEN:
                self._send(event.response())
            elif isinstance(event, CloseConnection) and self.closed is None:
                self.closed = event
                if not self.eof:
                    self._send(event.response())
        return events

    def _send(self, event: object) -> None:
        try:
            self.sock.sendall(self.ws.send(event))  # type: ignore[arg-type]
        except OSError:
            pass

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next text frame; AssertionError if the connection ends first."""
        deadline = time.monotonic() + timeout
        while not self.texts:
            if self.eof or self.closed is not None:
                raise AssertionError(f"connection closed ({self.closed}) while awaiting a line")
            self._read(deadline)
        return self.texts.popleft()

    def expect(self, expected: str, timeout: float = TIMEOUT) -> None:
        got = self.line(timeout)
        assert got == expected, f"expected {expected!r}, got {got!r}"

    def welcome(self) -> int:
        line = self.line()
        assert line.startswith("WELCOME "), line
        self.id = int(line.split()[1])
        return self.id

    def expect_closed(self, timeout: float = TIMEOUT) -> CloseConnection:
        """Read until the server's close frame and EOF; the close frame (None: no frame)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._read(deadline)
        assert not self.texts, f"unread lines before the close: {list(self.texts)}"
        assert self.closed is not None, "the connection ended without a close frame"
        return self.closed

    def close(self) -> None:
        self.sock.close()
