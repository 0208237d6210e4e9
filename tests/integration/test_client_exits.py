"""``python -m client`` exit codes and messages when things go wrong.

Some of these need a server that misbehaves (never says ``BYE``, closes without
a word); a listening socket in the test plays it, since the real server does
not.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.integration.harness import ROOT, TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def client(*args: str, stdin: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = client(*args)
    out, err = proc.communicate(stdin, timeout=TIMEOUT)
    return proc.returncode, out, err


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_connection_refused_is_one_line_and_exit_1() -> None:
    with socket.socket() as sock:  # bound, not listening: connecting to it is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out, err = run("127.0.0.1", str(port))
    assert (code, out) == (1, "")
    assert err == f"client: cannot connect to 127.0.0.1:{port}: connection refused\n"


def test_unknown_host_is_one_line_and_exit_1() -> None:
    code, out, err = run("no-such-host.invalid", "5000")
    assert (code, out) == (1, "")
    assert err.startswith("client: cannot connect to no-such-host.invalid:5000: ")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args", [[], ["127.0.0.1"], ["127.0.0.1", "0"], ["h", "70000"], ["h", "x"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, out, err = run(*args)
    assert (code, out) == (2, "")
    assert err.startswith("usage: python -m client")


def test_help_documents_every_flag() -> None:
    code, out, err = run("--help")
    assert (code, err) == (0, "")
    for flag in ("--raw", "--no-color", "--linger", "--connect-timeout", "NO_COLOR", "exit status"):
        assert flag in out


def test_no_bye_within_linger_still_exits_0(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    proc = client("127.0.0.1", str(port), "--raw", "--linger", "0.2")
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"WELCOME 1\n")
        out, err = proc.communicate("GET\n", timeout=TIMEOUT)
        assert read_line(conn) == b"GET\n"
        assert read_line(conn) == b"#CLOSE#\n"
    assert (proc.returncode, out) == (0, "WELCOME 1\n")
    assert err == "client: no BYE within 0.2 s; closed\n"


def test_eof_without_bye_exits_3(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    proc = client("127.0.0.1", str(port), "--raw")
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"WELCOME 1\nCONNECTED 2\n")
    proc.wait(TIMEOUT)  # with stdin still open: the client never sent #CLOSE#
    out, err = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, out) == (3, "WELCOME 1\nCONNECTED 2\n")
    assert err == f"client: the server at 127.0.0.1:{port} closed the connection\n"


def test_control_characters_from_the_server_are_escaped(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    proc = client("127.0.0.1", str(port))
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"WELCOME 1\nCONNECTED 2\nMSG \x1b]0;pwned\x07\r\nBYE\n")
        out, err = proc.communicate(timeout=TIMEOUT)
    lines = out.splitlines()
    assert lines[2].endswith(" 2: \\x1b]0;pwned\\x07")
    assert (proc.returncode, len(lines), err) == (0, 4, "")
