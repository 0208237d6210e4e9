"""``python -m client`` in pipe mode against the real server, and its exit codes.

The client runs as a subprocess with stdin and stdout pipes. Every wait reads
the client's stdout with a deadline; none sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.harness import ROOT, TIMEOUT, Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STAMP = r"\[\d\d:\d\d:\d\d\]"


class ClientProc:
    """``python -m client HOST PORT [flags]`` with stdin kept open until ``finish``."""

    def __init__(self, host: str, port: int, *flags: str) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", host, str(port), *flags],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.buf = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next stdout line; fails on timeout or EOF."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no line within {timeout}s (have {self.buf!r})")
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                raise AssertionError(f"stdout closed (have {self.buf!r}): {self.err()}")
            self.buf += data
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.decode()

    def expect(self, expected: str) -> None:
        got = self.line()
        assert got == expected, f"expected {expected!r}, got {got!r}"

    def expect_match(self, pattern: str) -> None:
        got = self.line()
        assert re.fullmatch(pattern, got), f"expected /{pattern}/, got {got!r}"

    def err(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, list[str], str]:
        """Close stdin, wait for the exit; return (code, the remaining stdout lines, stderr)."""
        out, _ = self.proc.communicate(timeout=timeout)
        rest = (self.buf + out).decode()
        self.buf = b""
        return self.proc.returncode, rest.splitlines(), self.err()

    def kill(self) -> None:
        """Teardown: end the process if it still runs and close every pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.proc.wait(TIMEOUT)
        self.stderr.close()


@pytest.fixture
def clients() -> Iterator[list[ClientProc]]:
    """Started client processes; any still running at teardown are killed."""
    started: list[ClientProc] = []
    yield started
    for c in started:
        c.kill()


def start(clients: list[ClientProc], server: Server, *flags: str) -> ClientProc:
    c = ClientProc(server.host, server.port, *flags)
    clients.append(c)
    return c


def run_client(stdin: str, host: str, port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client", host, str(port), *flags],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def worker_of(server: Server, client: ClientProc) -> int:
    """1-based index of the worker that holds the client process's connection."""
    (conn,) = psutil.Process(client.proc.pid).net_connections("tcp")
    for i in range(1, server.workers + 1):
        for theirs in psutil.Process(server.pid_of(f"worker {i}")).net_connections("tcp"):
            if theirs.raddr and tuple(theirs.raddr) == tuple(conn.laddr):
                return i
    raise AssertionError(f"no worker holds {conn.laddr}")


def test_get_raw_prints_welcome_clients_bye(server: Server) -> None:
    """The example from the task: ``printf 'GET\\n' | python -m client HOST PORT --raw``."""
    done = run_client("GET\n", server.host, server.port, "--raw")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "WELCOME 1\nCLIENTS 1=FREE\nBYE\n",
        "",
    )


def test_get_readable_prints_one_line_per_server_line(server: Server) -> None:
    done = run_client("GET\n", server.host, server.port)
    assert done.stdout.splitlines() == [
        "welcome: you are client 1",
        "clients: 1 free (you)",
        "bye: disconnected",
    ]
    assert (done.returncode, done.stderr) == (0, "")


def test_a_last_line_without_newline_is_sent(server: Server) -> None:
    done = run_client("PING", server.host, server.port, "--raw")
    assert (done.returncode, done.stdout) == (0, "WELCOME 1\nPONG\nBYE\n")


def test_aliases_work_in_pipe_mode_and_local_errors_go_to_stderr(server: Server) -> None:
    script = "/list\n/free\n/connect 9\n/nope\n//x\n/ping\n/quit\nGET\n"
    done = run_client(script, server.host, server.port, "--raw")
    assert done.stdout.splitlines() == [
        "WELCOME 1",
        "CLIENTS 1=FREE",
        "CLIENTS 1=FREE",
        "ERROR OFFLINE 9",
        "ERROR UNKNOWN_COMMAND /x",
        "PONG",
        "BYE",  # /quit: the GET after it is never answered
    ]
    assert (
        done.stderr == "error: /nope is not a command here; /help lists them, //text sends /text\n"
    )
    assert done.returncode == 0


def test_two_clients_chat_across_two_workers(server: Server, clients: list[ClientProc]) -> None:
    a = start(clients, server, "--raw")
    a.expect("WELCOME 1")
    b = start(clients, server)
    b.expect("welcome: you are client 2")
    assert {worker_of(server, a), worker_of(server, b)} == {1, 2}

    a.send("/connect 2")
    a.expect("CONNECTED 2")
    b.expect("connected: in a session with client 1; /bye ends it")
    a.send("hello from one")
    b.expect_match(rf"{STAMP} 1: hello from one")
    b.send("//slash and   spaces ")
    a.expect("MSG /slash and   spaces ")
    b.send("GET")  # in a session, protocol words are plain messages
    a.expect("MSG GET")
    b.send("/bye")
    b.expect("ended: the session with client 1 is over; you are free")
    a.expect("ENDED 2")

    assert a.finish() == (0, ["BYE"], "")
    assert b.finish() == (0, ["bye: disconnected"], "")


def test_stdin_eof_in_a_session_closes_and_the_partner_sees_ended(
    server: Server, clients: list[ClientProc]
) -> None:
    a = start(clients, server, "--raw")
    a.expect("WELCOME 1")
    b = server.client()
    a.send("CONNECT 2")
    a.expect("CONNECTED 2")
    b.expect("CONNECTED 1")
    a.send("last words")
    assert a.finish() == (0, ["BYE"], "")
    b.expect("MSG last words")
    b.expect("ENDED 1")


def test_sigint_in_pipe_mode_sends_close(server: Server, clients: list[ClientProc]) -> None:
    a = start(clients, server, "--raw")
    a.expect("WELCOME 1")
    b = server.client()
    b.send("CONNECT 1")
    b.expect("CONNECTED 1")
    a.expect("CONNECTED 2")
    a.proc.send_signal(signal.SIGINT)  # , as Ctrl-C in the terminal that started a script
    b.expect("ENDED 1")
    assert a.finish() == (0, ["BYE"], "")


def test_outage_ends_the_client_with_exit_code_3(server: Server, clients: list[ClientProc]) -> None:
    a = start(clients, server)
    a.expect("welcome: you are client 1")
    server.stop()
    a.expect("outage: the server is shutting down")
    code, rest, err = a.finish()
    assert (code, rest) == (3, [])
    assert err == f"client: the server at {server.host}:{server.port} shut down\n"


def test_a_full_server_is_a_connect_failure(start_server, clients: list[ClientProc]) -> None:
    server = start_server("--max-clients", "1")
    server.client()
    done = run_client("", server.host, server.port, "--raw")
    assert done.stdout == "ERROR FULL\n"
    assert (
        done.stderr
        == f"client: cannot connect to {server.host}:{server.port}: the server is full\n"
    )
    assert done.returncode == 1


def test_name_match_and_names_beside_messages(server: Server, clients: list[ClientProc]) -> None:
    """``--name`` is taken after WELCOME; ``/match`` pairs two client processes; a name
    the last listing showed is printed beside its id."""
    ann = start(clients, server, "--name", "ann")
    ann.expect("welcome: you are client 1")
    ann.expect("named: others see you as ann")
    bo = start(clients, server, "--name", "bo")
    bo.expect("welcome: you are client 2")
    bo.expect("named: others see you as bo")
    ann.send("/match")
    ann.expect("waiting: you are next in line for a partner; /cancel leaves")
    bo.send("/list")
    bo.expect("clients: 1 ann waiting, 2 bo free (you)")
    bo.send("/match")
    bo.expect("connected: in a session with client 1 ann; /bye ends it")
    ann.expect("connected: in a session with client 2; /bye ends it")  # ann never listed
    ann.send("hi bo")
    bo.expect_match(STAMP + " 1 ann: hi bo")
    bo.send("/bye")
    bo.expect("ended: the session with client 1 is over; you are free")
    ann.expect("ended: the session with client 2 is over; you are free")
    assert ann.finish()[:2] == (0, ["bye: disconnected"])
    assert bo.finish()[:2] == (0, ["bye: disconnected"])


def test_a_bad_name_is_a_usage_error(server: Server) -> None:
    done = run_client("", server.host, server.port, "--name", "12")
    assert done.returncode == 2
    assert "not a name: '12'" in done.stderr
