"""``python -m client`` on a real pseudo-terminal (pexpect) against the real server.

The partner is a plain socket client from the harness, so every line it gets
can be asserted exactly. prompt_toolkit asks the terminal for the cursor
position; pexpect never answers, so ``PROMPT_TOOLKIT_NO_CPR`` turns the
question off instead of waiting for it.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterator

import pexpect
import pytest

from tests.integration.harness import ROOT, TIMEOUT, Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STAMP = r"\[\d\d:\d\d:\d\d\]"

Spawn = Callable[..., pexpect.spawn]


@pytest.fixture
def spawn(server: Server) -> Iterator[Spawn]:
    """Start ``python -m client`` for ``server`` on a pty; ``color`` keeps NO_COLOR unset."""
    children: list[pexpect.spawn] = []

    def start(*flags: str, color: bool = False) -> pexpect.spawn:
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1")
        if not color:
            env["NO_COLOR"] = "1"
        child = pexpect.spawn(
            sys.executable,
            ["-m", "client", server.host, str(server.port), *flags],
            cwd=str(ROOT),
            env=env,
            dimensions=(24, 120),
            encoding="utf-8",
            timeout=TIMEOUT,
        )
        child.logfile_read = io.StringIO()  # everything it wrote, for screen()
        children.append(child)
        return child

    yield start
    for child in children:
        child.close(force=True)


CSI = re.compile(r"\x1b\[([?\d;]*)([A-Za-z])")


def screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``, for the escapes prompt_toolkit writes
    here: cursor moves (A B C D), erase below (J) and to the end of the line (K); modes
    and colours change no text. Lines are never wider than the pty, so nothing wraps."""
    rows: list[list[str]] = [[]]
    y = x = 0
    i = 0
    while i < len(output):
        match = CSI.match(output, i)
        if match is not None:
            i = match.end()
            args, op = match.groups()
            n = int(args) if args.isdigit() else 1
            if op == "A":
                y = max(0, y - n)
            elif op == "B":
                y += n
            elif op == "C":
                x += n
            elif op == "D":
                x = max(0, x - n)
            elif op == "J":
                del rows[y][x:]
                del rows[y + 1 :]
            elif op == "K":
                del rows[y][x:]
            while len(rows) <= y:
                rows.append([])
            continue
        char = output[i]
        i += 1
        if char == "\r":
            x = 0
        elif char == "\n":
            y += 1
            while len(rows) <= y:
                rows.append([])
        elif char >= " ":
            row = rows[y]
            row.extend(" " * (x - len(row)))
            row[x : x + 1] = [char]
            x += 1
    return ["".join(row).rstrip() for row in rows]


def exit_status(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_half_typed_line_survives_an_incoming_message(server: Server, spawn: Spawn) -> None:
    a = spawn("--no-color")
    a.expect_exact("welcome: you are client 1")
    b = server.client()
    b.send("CONNECT 1")
    b.expect("CONNECTED 1")
    a.expect_exact("connected: in a session with client 2; /bye ends it")
    a.expect_exact("[1 -> 2]>")

    a.send("hello wor")  # half a line, no Enter yet
    a.expect_exact("hello wor")  # the prompt has taken the keys
    b.send("are you there?")
    a.expect(rf"{STAMP} 2: are you there\?")
    a.expect_exact("[1 -> 2]> hello wor")  # redrawn below the message, still half-typed
    a.send("ld, yes\r")
    b.expect("MSG hello world, yes")

    a.sendintr()  # Ctrl-C: #CLOSE#, BYE, exit 0
    b.expect("ENDED 1")
    a.expect_exact("bye: disconnected")
    assert exit_status(a) == 0


def test_colors_table_errors_and_ctrl_d(spawn: Spawn) -> None:
    a = spawn(color=True)
    a.expect_exact("\x1b[36mwelcome: you are client 1\x1b[0m")
    a.expect_exact("[1 FREE]>")
    a.send("/list\r")
    a.expect_exact("id  status")
    a.expect_exact(" 1  FREE  (you)")
    a.send("/nope\r")
    a.expect_exact("\x1b[31merror: /nope is not a command here")
    a.send("CONNECT 1\r")
    a.expect_exact("\x1b[31merror: that is your own id (1); pick someone else from /list\x1b[0m")
    a.sendeof()  # Ctrl-D on an empty line
    a.expect_exact("bye: disconnected")
    assert exit_status(a) == 0


@pytest.mark.parametrize("flag", ["--no-color", "NO_COLOR"])
def test_no_color(spawn: Spawn, flag: str) -> None:
    a = spawn(*([flag] if flag.startswith("--") else []), color=flag.startswith("--"))
    a.expect_exact("welcome: you are client 1")
    assert not a.before.endswith("\x1b[36m")
    a.send("/nope\r")
    a.expect_exact("error: /nope is not a command here")
    assert not a.before.endswith("\x1b[31m")
    a.send("/quit\r")
    a.expect_exact("bye: disconnected")
    assert exit_status(a) == 0


def test_partner_leaving_and_server_outage(server: Server, spawn: Spawn) -> None:
    a = spawn("--no-color")
    a.expect_exact("welcome: you are client 1")
    b = server.client()
    b.send("CONNECT 1")
    b.expect("CONNECTED 1")
    a.expect_exact("[1 -> 2]>")
    b.send("#GOODBYE#")
    b.expect("ENDED 1")
    a.expect_exact("ended: the session with client 2 is over; you are free")
    a.expect_exact("[1 FREE]>")
    a.send("half typed")
    a.expect_exact("half typed")
    server.stop()
    a.expect_exact("outage: the server is shutting down")
    a.expect_exact(f"client: the server at {server.host}:{server.port} shut down")
    assert exit_status(a) == 3
    # no stale "[closed]>" prompt is left, with the notices below it: they end the screen
    shown = [line for line in screen(a.logfile_read.getvalue()) if line]
    assert shown[-3:] == [
        "ended: the session with client 2 is over; you are free",
        "outage: the server is shutting down",
        f"client: the server at {server.host}:{server.port} shut down",
    ]


def test_quit_leaves_no_prompt_after_bye(spawn: Spawn) -> None:
    """After /quit a new prompt was drawn, turned into "[closed]>" and left above BYE."""
    a = spawn("--no-color")
    a.expect_exact("welcome: you are client 1")
    a.expect_exact("[1 FREE]>")
    a.send("/quit\r")
    a.expect_exact("bye: disconnected")
    assert exit_status(a) == 0
    shown = [line for line in screen(a.logfile_read.getvalue()) if line]
    assert shown[-2:] == ["[1 FREE]> /quit", "bye: disconnected"]


def test_history_and_line_editing(spawn: Spawn) -> None:
    a = spawn("--no-color")
    a.expect_exact("welcome: you are client 1")
    a.send("PING\r")
    a.expect_exact("pong")
    a.expect_exact("[1 FREE]>")
    a.send("\x1b[A")  # arrow up: the last line comes back
    a.expect_exact("PING")
    a.send("\x7f\x7f\x7f\x7fGET FREE\r")  # four backspaces, then a new line
    a.expect_exact("id  status")
    a.expect_exact(" 1  FREE  (you)")
    a.sendintr()
    assert exit_status(a) == 0
