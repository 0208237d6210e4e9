"""Intake under faults: a stopped worker, full hand-over channels, a descriptor flood.

Regression tests: a SIGSTOPped worker used to stop every new client (the acceptor
blocked in ``sendmsg`` on its full channel), and a worker at its descriptor limit
took a truncated hand-over for a closed channel and never read another.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import psutil
import pytest

from tests.integration.harness import Server, title

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: Short, so the test is; still 12 beats (ipc.load.BEAT_INTERVAL).
WORKER_TIMEOUT = 3.0


@pytest.fixture
def many_fds() -> Iterator[None]:
    """These tests hold thousands of sockets: the soft descriptor limit goes up to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fd_limit(n: int) -> Callable[[], None]:
    """A ``preexec_fn`` that starts the server under ``ulimit -n n``."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll a fact with nothing to block on (process table, log file) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)
    return value


class Crowd:
    """Many raw connections opened at once; one selector reads their first lines."""

    def __init__(self, server: Server, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.first: dict[socket.socket, str] = {}  # first line, or "<closed>"
        self._bufs: dict[socket.socket, bytes] = {}
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((server.host, server.port))
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
            self.socks.append(sock)

    def read_first_lines(self, timeout: float) -> float:
        """Read until every socket gave a first line or closed; returns the seconds it took."""
        started = time.monotonic()
        for sock in self.socks:
            self._bufs[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ)
        deadline = started + timeout
        while len(self.first) < len(self.socks):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.selector.select(left):
                self._read(key.fileobj)  # type: ignore[arg-type]
        return time.monotonic() - started

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._bufs[sock] += data
        if b"\n" in self._bufs[sock] or not data:
            line = self._bufs[sock].split(b"\n", 1)[0].decode() if data else "<closed>"
            self.first[sock] = line
            self.selector.unregister(sock)

    def expect_welcomes(self, timeout: float) -> float:
        took = self.read_first_lines(timeout)
        welcomed = [s for s, line in self.first.items() if re.fullmatch(r"WELCOME \d+", line)]
        others = sorted({line for line in self.first.values() if not line.startswith("WELCOME")})
        assert len(welcomed) == len(self.socks), (
            f"{len(welcomed)} of {len(self.socks)} got WELCOME in {took:.2f}s; "
            f"{len(self.socks) - len(self.first)} got nothing; other first lines: {others}"
        )
        return took

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()


def held_by(server: Server, worker: int) -> set[tuple[str, int]]:
    """The client addresses of every connection worker ``worker`` (1-based) holds."""
    conns = psutil.Process(server.pid_of(f"worker {worker}")).net_connections("tcp")
    return {(c.raddr.ip, c.raddr.port) for c in conns if c.raddr}


def new_pid(server: Server, name: str, old: int) -> int | None:
    for p in psutil.Process(server.proc.pid).children():
        if title(p) == f"matchmaker: {name}" and p.pid != old:
            return p.pid
    return None


@pytest.mark.parametrize("policy", ["least-loaded", "round-robin"])
def test_a_stopped_worker_is_passed_over_and_replaced(start_server, many_fds, policy):
    """One SIGSTOPped worker used to stop the whole server's intake: of 700 new clients
    278 got WELCOME, and none after them. Now the acceptor passes over the silent worker
    and the supervisor replaces it, whose replacement serves the clients left waiting."""
    server = start_server("--placement", policy, "--worker-timeout", str(WORKER_TIMEOUT))
    stopped = server.pid_of("worker 1")
    os.kill(stopped, signal.SIGSTOP)
    stopped_at = time.monotonic()
    crowds: list[Crowd] = []
    try:
        # placed at once, while worker 1's beat is fresh: the first goes to worker 1
        early = Crowd(server, 4)
        crowds.append(early)
        wait_for(
            lambda: "passing worker 1 over" in server.log(),
            10.0,
            "the acceptor to pass over the stopped worker",
        )
        crowd = Crowd(server, 700)
        crowds.append(crowd)
        crowd.expect_welcomes(timeout=6.0)
        # none of them was queued behind the stopped worker
        assert {sock.getsockname() for sock in crowd.socks} <= held_by(server, 2)
        replaced = stopped_at + WORKER_TIMEOUT + 5.0 - time.monotonic()
        wait_for(lambda: new_pid(server, "worker 1", stopped), replaced, "a new worker 1")
        assert re.search(r"worker 1 killed by SIGKILL: event loop silent for", server.log())
        early.expect_welcomes(timeout=10.0)
        # the replacement took over the clients left waiting in the stopped one's channel
        assert {sock.getsockname() for sock in early.socks} & held_by(server, 1)
        more = Crowd(server, 10)  # the replacement takes new clients too
        crowds.append(more)
        more.expect_welcomes(timeout=6.0)
    finally:
        with suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
        for c in crowds:
            c.close()


def test_a_descriptor_flood_passes_and_fresh_clients_are_served(start_server, many_fds):
    """Under ``ulimit -n 512`` a worker at its limit got hand-overs without their
    descriptor, took that for a closed channel and stopped reading new clients: after
    3,000 connections at once, 0 of 150 fresh clients got WELCOME."""
    server = start_server("--max-clients", "200", preexec_fn=fd_limit(512))
    flood = Crowd(server, 3000)
    try:
        # hold the flood until the server has answered most of it (FULL, WELCOME or a close)
        flood.read_first_lines(timeout=5.0)
    finally:
        flood.close()
    probe = first_served(server, timeout=10.0)
    try:
        fresh = Crowd(server, 150)
        try:
            fresh.expect_welcomes(timeout=5.0)
        finally:
            fresh.close()
        again = Crowd(server, 10)
        try:
            again.expect_welcomes(timeout=5.0)
        finally:
            again.close()
    finally:
        probe.close()
    truncated = server.log().count("without its descriptor")
    assert truncated <= 10, f"{truncated} log lines about truncated hand-overs"


def first_served(server: Server, timeout: float) -> socket.socket:
    """A client that got WELCOME once the flood's clients are gone (``GET`` lists it alone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no client served alone within {timeout}s after the flood"
        try:
            sock = socket.create_connection((server.host, server.port), timeout=left)
        except OSError:
            continue
        reader = sock.makefile("rb")
        try:
            first = reader.readline().decode()
            if first.startswith("WELCOME "):
                me = first.split()[1]
                while time.monotonic() < deadline:
                    sock.sendall(b"GET\n")
                    if reader.readline().decode() == f"CLIENTS {me}=FREE\n":
                        return sock
                    time.sleep(0.05)  # the flood's clients are still being dropped
        except OSError:
            pass
        finally:
            reader.close()
        sock.close()
        time.sleep(0.05)  # refused (FULL) or cut: the flood is still draining
