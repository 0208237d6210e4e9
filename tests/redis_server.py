"""A real ``redis-server`` for the tests: the cluster mode (``--redis``) shares its client table
through Redis, and its faults (Redis killed, restarted empty, unreachable) are tested against
the real thing rather than a fake.

No sleeps as synchronisation: readiness is a PING answered, exit is a reaped process, both
with a deadline; a failure says what Redis logged.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

TIMEOUT = 10.0
HOST = "127.0.0.1"
INSTALL_HINT = "install it with `apt-get install -y redis-server` (Debian/Ubuntu)"
# Attempts at a fresh free port when another process takes the one chosen before Redis binds it.
PORT_ATTEMPTS = 5


def redis_server_path() -> str | None:
    """The ``redis-server`` binary: on PATH, else Debian's /usr/bin one (PATH may be trimmed)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    return None


def on_ci() -> bool:
    """CI sets ``CI=true``: there a missing Redis is a broken install, not a reason to skip."""
    return os.environ.get("CI", "").lower() == "true"


def require_redis_server() -> str:
    """The ``redis-server`` path; if missing, fail on CI, else skip saying how to install it."""
    path = redis_server_path()
    if path is not None:
        return path
    if on_ci():
        pytest.fail(f"redis-server not found but CI=true: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"redis-server not found: {INSTALL_HINT}")


def free_port() -> int:
    """A loopback port free right now; another process may take it before Redis binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout: float) -> bool:
    """Whether something on ``port`` answers a RESP PING with PONG within ``timeout``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:  # refused, reset or timed out: not serving (yet)
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, without persistence, in its own session.

    Started by the constructor. ``kill``/``stop`` then ``start`` give a Redis restarted
    empty on the same port (the server under test reconnects to the same URL);
    ``pause``/``resume`` make it unreachable while it keeps its data.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or require_redis_server()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.log_path = self.dir / "redis.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._clients: list[redis.Redis] = []
        self._closed = False
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not running"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start Redis, empty: first on a free port, after ``kill``/``stop`` on the same one."""
        assert not self._closed, "RedisServer is closed"
        assert not self.running(), f"redis-server already running (pid {self.pid})"
        if self.port:
            self._launch(self.port)
            return
        for attempt in range(PORT_ATTEMPTS):
            port = free_port()
            try:
                self._launch(port)
            except PortTaken:
                if attempt + 1 == PORT_ATTEMPTS:
                    raise
                continue
            self.port = port
            return

    def _launch(self, port: int) -> None:
        """Run redis-server on ``port`` and wait until it answers PING as itself."""
        if self._log is None:
            self._log = open(self.log_path, "ab")  # appended across restarts: one history
        offset = self._log.tell()
        cmd = [self.binary, "--bind", HOST, "--port", str(port), "--dir", str(self.dir)]
        cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        self.proc = proc = subprocess.Popen(
            cmd,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + TIMEOUT
        while not ping(port, timeout=0.5):
            if proc.poll() is not None:
                self.proc = None
                text = self.log(offset)
                if "Address already in use" in text:
                    raise PortTaken(f"port {port} is taken: {text}")
                raise AssertionError(f"redis-server exited on start: {text}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"redis-server did not answer PING in {TIMEOUT}s: {self.log()}"
                )
            try:  # paces the loop (refused connects return at once) and notices an early exit
                proc.wait(0.01)
            except subprocess.TimeoutExpired:
                pass
        # Another Redis may hold the port if ours lost the bind race and has not exited yet.
        with redis.Redis(host=HOST, port=port, socket_timeout=TIMEOUT) as probe:
            serving = probe.info("server")["process_id"]
        if serving != proc.pid:
            self.kill()
            raise PortTaken(f"port {port} is served by pid {serving}, not {proc.pid}")

    def log(self, offset: int = 0) -> str:
        """What Redis wrote to stdout/stderr since ``offset``, for failure messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def client(self, **options: Any) -> redis.Redis:
        """A sync client for assertions; closed by ``close``.

        Strings in and out, a deadline on every command, and no retries: a test of an
        outage wants the first failure, not a retried success. ``options`` override these.
        """
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "db": 0,
            "decode_responses": True,
            "socket_timeout": TIMEOUT,
            "socket_connect_timeout": TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        }
        kwargs.update(options)
        client = redis.Redis(**kwargs)
        self._clients.append(client)
        return client

    def pause(self) -> None:
        """SIGSTOP: connects still complete (the kernel queues them) but nothing is answered."""
        assert self.running(), "redis-server is not running"
        os.kill(self.pid, signal.SIGSTOP)
        # The signal is delivered when the kernel next schedules Redis: wait for the stop
        # itself (we are its parent), so that "paused" is true when this returns.
        _, status = os.waitpid(self.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"redis-server ended instead of stopping: {status}"

    def resume(self) -> None:
        """SIGCONT after ``pause``: Redis answers again, its data intact."""
        assert self.running(), "redis-server is not running"
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole session and reap: a Redis crash, data lost."""
        if self.proc is None:
            return
        if self.proc.poll() is None:  # unreaped, so the pid (and group) is still ours
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(TIMEOUT)
        self.proc = None

    def stop(self, timeout: float = TIMEOUT) -> int | None:
        """SIGTERM (and SIGCONT, in case it is paused), reap, and return the exit status.

        Falls back to SIGKILL when Redis ignores SIGTERM for ``timeout`` seconds, and says so.
        """
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only once resumed
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"redis-server ignored SIGTERM: {self.log()}") from None
        self.proc = None
        return status

    def close(self) -> None:
        """Stop Redis, close clients and the log, remove the directory; safe to call again."""
        if self._closed:
            return
        self._closed = True
        try:
            for client in self._clients:
                client.close()
            self._clients.clear()
            self.stop()
        finally:
            self.kill()  # only if stop raised before reaping
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PortTaken(Exception):
    """Another process holds the port chosen: start again on a fresh one."""
