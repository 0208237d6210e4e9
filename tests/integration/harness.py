"""Real server processes and real line clients for the integration tests.

No sleeps as synchronisation: everything waits for an event (a line, a closed
socket, a process exit) with a deadline, and says what it saw when it fails.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.wsclient import WsClient

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0

#: Limits most tests would trip over on purpose: they stream thousands of lines
#: as fast as they can, and open dozens of clients at once, all from 127.0.0.1.
#: A test of a limit passes its own value, which wins (the last of a repeated
#: flag counts).
UNLIMITED = ("--rate", "0", "--max-per-ip", "0", "--accept-rate", "0")


class Server:
    """``python -m matchmaker`` on 127.0.0.1 and a free port, in its own process group."""

    def __init__(
        self, *args: str, workers: int = 2, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        """``preexec_fn`` runs in the server's process before it starts (e.g. to set limits)."""
        self.stderr = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--workers", str(workers), "--placement", "round-robin", *UNLIMITED, *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        self.host = "127.0.0.1"
        self.legacy_port = 0
        self.tls_port = 0
        self.ws_port = 0  # with --ws-port
        self.metrics_port = 0  # with --metrics-port
        # with --port off the WebSocket port's line is the last one, or else the TLS port's
        self.plain = all(
            (flag, value) != ("--port", "off") for flag, value in zip(args, args[1:], strict=False)
        )
        self.web = "--ws-port" in args
        self.workers = workers
        self.opened: list[Client] = []
        try:
            self.port = self._read_port()
            self._children = self._wait_children(workers + 2)
        except BaseException:  # a server that did not start is not left running
            self.kill()
            raise

    def _read_port(self) -> int:
        """Read stdout up to ``listening on HOST:PORT``; note ``legacy listening on``,
        ``tls listening on`` and ``ws listening on`` too (the last of those is the last line
        with ``--port off``: the port is then 0)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        text = ""
        while True:
            for line in text.splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                if line.startswith("legacy listening on "):
                    self.legacy_port = int(line.strip().rsplit(":", 1)[1])
                elif line.startswith("metrics listening on "):
                    self.metrics_port = int(line.strip().rsplit(":", 1)[1])
                elif line.startswith("tls listening on "):
                    self.tls_port = int(line.strip().rsplit(":", 1)[1])
                    if not self.plain and not self.web:
                        return 0
                elif line.startswith("ws listening on "):
                    self.ws_port = int(line.strip().rsplit(":", 1)[1])
                    if not self.plain:
                        return 0
                elif line.startswith("listening on "):
                    return int(line.strip().rsplit(":", 1)[1])
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.kill()
                raise AssertionError(f"server did not start in {TIMEOUT}s: {self.log()}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"server exited early: {self.log()}")
            text += chunk.decode()

    def _wait_children(self, count: int) -> list[psutil.Process]:
        parent = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + TIMEOUT
        while True:
            children = [p for p in parent.children() if title(p).startswith("matchmaker: ")]
            workers = [p for p in children if title(p).startswith("matchmaker: worker")]
            if len(children) >= count and all(serving(p) for p in workers):
                return parent.children(recursive=True)
            if time.monotonic() > deadline:
                raise AssertionError(f"children did not start: {children} {self.log()}")
            time.sleep(0.02)  # polling the process table: nothing to wait on

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The server's processes now; every one ever seen is checked at teardown."""
        try:
            now = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        known = {p.pid for p in self._children}
        self._children += [p for p in now if p.pid not in known]
        return now

    def pid_of(self, name: str) -> int:
        """Pid of the live child titled ``matchmaker: <name>`` (e.g. ``worker 1``)."""
        for p in self.children():
            if title(p) == f"matchmaker: {name}":
                return p.pid
        raise AssertionError(f"no process titled {name!r}")

    def worker_of(self, client: Client) -> int:
        """1-based index of the worker that holds ``client``'s socket.

        Right after a move both workers hold it for a moment (the one it left
        closes its copy once it has sent it): wait for that to end.
        """
        local = client.sock.getsockname()
        deadline = time.monotonic() + TIMEOUT
        while True:
            holders = [
                i
                for i in range(1, self.workers + 1)
                for conn in psutil.Process(self.pid_of(f"worker {i}")).net_connections("tcp")
                if conn.raddr and (conn.raddr.ip, conn.raddr.port) == local
            ]
            if len(holders) == 1:
                return holders[0]
            if not holders or time.monotonic() > deadline:
                raise AssertionError(f"workers {holders} hold the connection from {local}")
            time.sleep(0.02)  # polling the process table: nothing to wait on

    def connect(self, rcvbuf: int = 0, source: str = "") -> Client:
        """A new connection (from address ``source``: 127.0.0.2 ...), nothing read yet;
        closed at teardown."""
        c = Client(self.host, self.port, rcvbuf, source=source)
        self.opened.append(c)
        return c

    def tls_client(self, ctx: ssl.SSLContext, name: str = "localhost") -> Client:
        """A new client of the TLS port that has read its ``WELCOME``; closed at teardown."""
        c = Client(self.host, self.tls_port, tls=ctx, name=name)
        self.opened.append(c)
        c.welcome()
        return c

    def ws_client(self, origin: str | None = None, **options: Any) -> WsClient:
        """A new client of the WebSocket port that has read its ``WELCOME``; closed at
        teardown."""
        c = WsClient(self.host, self.ws_port, origin=origin, **options)
        self.opened.append(c)  # type: ignore[arg-type]
        c.welcome()
        return c

    def client(self, rcvbuf: int = 0, source: str = "") -> Client:
        """A new client that has read its ``WELCOME``."""
        c = self.connect(rcvbuf, source)
        c.welcome()
        return c

    def stop(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, wait, and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(TIMEOUT)

    def survivors(self) -> list[psutil.Process]:
        return [p for p in self._children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def close(self) -> None:
        """Teardown: always stop, and fail if any process outlives the server."""
        for c in self.opened:
            c.close()
        self.children()
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM: {self.log()}") from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        left = self.wait_survivors()
        for p in left:
            p.kill()
        assert not left, f"processes outlived the server: {left}"
        self.stderr.close()

    def wait_survivors(self, timeout: float = TIMEOUT) -> list[psutil.Process]:
        """Children still running ``timeout`` seconds after the server exited.

        A child still exiting as the supervisor is reaped may linger for a
        moment; anything else should already be gone.
        """
        deadline = time.monotonic() + timeout
        while (left := self.survivors()) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the process table: nothing to wait on
        return left


def serving(worker: psutil.Process) -> bool:
    """Whether a worker waits in its event loop: the acceptor places clients only on those.

    Before that a worker is still starting (reading its arguments, importing),
    and round-robin placement would skip it.
    """
    try:
        with open(f"/proc/{worker.pid}/wchan") as f:
            return "epoll" in f.read()
    except OSError:
        return False


def title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()).strip()  # setproctitle pads argv with empty strings
    except psutil.Error:
        return ""


def connect_to(host: str, port: int, rcvbuf: int = 0, source: str = "") -> socket.socket:
    """A connected socket; ``rcvbuf`` set before connecting, so the window stays that small;
    from the local address ``source`` if given (any of 127.0.0.0/8 on loopback)."""
    if not rcvbuf:
        where = (source, 0) if source else None
        return socket.create_connection((host, port), timeout=TIMEOUT, source_address=where)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect((host, port))
    return sock


class Client:
    """A line-protocol client on a blocking socket with deadlines; over TLS with ``tls``."""

    def __init__(
        self,
        host: str,
        port: int,
        rcvbuf: int = 0,
        tls: ssl.SSLContext | None = None,
        name: str = "localhost",
        source: str = "",
    ) -> None:
        self.sock = connect_to(host, port, rcvbuf, source)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=name)
        self.buf = b""
        self.id = 0

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = (data + "\n").encode()
        self.sock.sendall(data)

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line; fails on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line within {timeout}s (have {self.buf[:200]!r})")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"connection closed (have {self.buf[:200]!r})")
            self.buf += data
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode()

    def expect(self, expected: str, timeout: float = TIMEOUT) -> None:
        got = self.line(timeout)
        assert got == expected, f"client {self.id}: expected {expected!r}, got {got!r}"

    def welcome(self) -> int:
        word, _, rest = self.line().partition(" ")
        assert word == "WELCOME", f"expected WELCOME, got {word} {rest}"
        self.id = int(rest)
        return self.id

    def expect_closed(self, timeout: float = TIMEOUT) -> None:
        """Nothing more arrives and the server closes the socket."""
        assert not self.buf, f"unexpected data before close: {self.buf[:200]!r}"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "socket not closed in time"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return
            if not data:
                return
            raise AssertionError(f"unexpected data before close: {data[:200]!r}")

    def quiet(self) -> None:
        """Round trip a PING: every reply to earlier lines has been read by then."""
        self.send("PING")
        self.expect("PONG")

    def close(self) -> None:
        self.sock.close()


def pair(a: Client, b: Client) -> None:
    """Put ``a`` and ``b`` in a session, ``a`` asking."""
    a.send(f"CONNECT {b.id}")
    a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")


def two_clients(server: Server, placement: str) -> tuple[Client, Client]:
    """Two welcomed clients on the same worker or on different ones (round-robin placement)."""
    a, other = server.client(), server.client()
    if placement in ("cross", "relayed"):
        b = other
    else:
        b = server.client()
        other.send("#CLOSE#")  # its id stays free, so ids are 1 and 3
        other.expect("BYE")
        other.expect_closed()
        server.opened.remove(other)
        other.close()
    same = server.worker_of(a) == server.worker_of(b)
    assert same == (placement == "same")
    return a, b


class LegacyClient:
    """The original C++ client's side of the wire: 256-byte NUL-padded records."""

    def __init__(
        self, host: str, port: int, garbage: bool = True, rcvbuf: int = 0, source: str = ""
    ) -> None:
        self.sock = connect_to(host, port, rcvbuf, source)
        self.buf = b""
        self.garbage = garbage  # pad like the original: bytes after the NUL are junk
        self.times: list[float] = []  # when each record arrived, for pacing checks

    def record(self, text: str) -> bytes:
        raw = text.encode() + b"\0"
        pad = bytes(range(1, 256 - len(raw) + 1)) if self.garbage else bytes(256 - len(raw))
        return raw + pad[: 256 - len(raw)]

    def send(self, text: str) -> None:
        self.sock.sendall(self.record(text))

    def recv(self, timeout: float = TIMEOUT) -> str:
        """The text of the next 256-byte record."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 256:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no record within {timeout}s (have {self.buf[:80]!r})")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(256 - len(self.buf))
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"connection closed (have {self.buf[:80]!r})")
            self.buf += data
        rec, self.buf = self.buf[:256], self.buf[256:]
        self.times.append(time.monotonic())
        assert rec.find(b"\0") >= 0 and rec[rec.find(b"\0") :] == bytes(256 - rec.find(b"\0"))
        return rec[: rec.find(b"\0")].decode()

    def expect(self, text: str, timeout: float = TIMEOUT) -> None:
        got = self.recv(timeout)
        assert got == text, f"legacy client: expected {text!r}, got {got!r}"

    def close(self) -> None:
        self.sock.close()
