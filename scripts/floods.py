"""Worker memory under the floods that once grew it without bound, as peak RSS growth.

``python -m scripts.floods`` starts the real server (the integration tests'
harness, on 127.0.0.1) once per scenario and prints each worker's peak RSS
growth next to the bound docs/PROTOCOL.md promises: clients x (--max-line +
--sendq), plus a constant. Run it from a checkout of another commit (with this
file and the tests' harness copied in) to compare; it stops by itself.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))
# the tests' own harness, looked up at run time: the checker of scripts/ stays out of tests/
_harness: Any = importlib.import_module("tests.integration.harness")
_flow: Any = importlib.import_module("tests.integration.test_flow")
Server, pair = _harness.Server, _harness.pair
read_lines, rss, sender, stream = _flow.read_lines, _flow.rss, _flow.sender, _flow.stream

MIB = 1 << 20
PER_CLIENT = 4096 + MIB  # --max-line + --sendq at their defaults


def relayed_stream() -> tuple[str, int, int]:
    """A relayed session streams 40 MB of 1,000-byte lines to a reader."""
    server = Server("--migrate", "off")
    try:
        a, b = server.client(), server.client()
        pair(a, b)
        before, peak = rss(server, "worker 1"), 0
        lines, _writer = stream(a, 40_000, width=1000)
        done = 0
        while done < len(lines):
            done += len(read_lines(b, min(2000, len(lines) - done), timeout=60))
            peak = max(peak, rss(server, "worker 1"))
        return (
            "relayed stream of 40 MB to a reader (sender's worker)",
            peak - before,
            2 * PER_CLIENT,
        )
    finally:
        server.kill()


def help_flood() -> tuple[str, int, int]:
    """20 clients each send 256 KiB of HELP lines and read nothing, for 8 s."""
    server = Server(workers=1)
    try:
        probe = server.client()
        before, peak = rss(server, "worker 1"), 0
        greedy = [server.client(rcvbuf=4096) for _ in range(20)]
        for c in greedy:
            sender(c.sock, b"HELP\n" * (256 * 1024 // 5))
        started = time.monotonic()
        while time.monotonic() - started < 8:
            peak = max(peak, rss(server, "worker 1"))
            probe.quiet()
        return "20 clients x 256 KiB of HELP, unread", peak - before, 20 * PER_CLIENT
    finally:
        server.kill()


def get_flood() -> tuple[str, int, int]:
    """40 clients send GET and 256 KiB of short lines while the matchmaker is stopped."""
    server = Server(workers=1)
    try:
        probe = server.client()
        clients = [server.client() for _ in range(40)]
        before = rss(server, "worker 1")
        matchmaker = server.pid_of("matchmaker")
        os.kill(matchmaker, signal.SIGSTOP)
        try:
            for c in clients:
                c.sock.sendall(b"GET\n" + b"x\n" * (128 * 1024))
            probe.quiet()
            peak = rss(server, "worker 1")
        finally:
            os.kill(matchmaker, signal.SIGCONT)
        started = time.monotonic()
        while time.monotonic() - started < 3:
            peak = max(peak, rss(server, "worker 1"))
            probe.quiet()
        return "40 clients x (GET + 256 KiB of short lines)", peak - before, 40 * PER_CLIENT
    finally:
        server.kill()


def relayed_non_reader() -> tuple[str, int, int]:
    """A relayed session offers 200 MB for 8 s to a reader that never reads."""
    server = Server("--migrate", "off")
    try:
        a, b = server.client(), server.client(rcvbuf=4096)
        pair(a, b)
        workers = ("worker 1", "worker 2")
        before, peak = sum(rss(server, w) for w in workers), 0
        sender(a.sock, (b"m" * 4000 + b"\n") * 50_000)
        started = time.monotonic()
        while time.monotonic() - started < 8:
            peak = max(peak, sum(rss(server, w) for w in workers))
            time.sleep(0.05)  # sampling the processes' memory: nothing to wait on
        return "relayed, 200 MB to a reader that never reads (both)", peak - before, 2 * PER_CLIENT
    finally:
        server.kill()


SCENARIOS: list[Callable[[], tuple[str, int, int]]] = [
    relayed_stream,
    help_flood,
    get_flood,
    relayed_non_reader,
]


def main() -> int:
    print(f"{'scenario':<56}{'peak growth':>13}{'bound':>11}")
    for scenario in SCENARIOS:
        try:
            name, grew, bound = scenario()
        except AssertionError as exc:  # an old server may cut a client or die on the way
            print(f"{scenario.__name__:<56} failed: {str(exc)[:60]}")
            continue
        print(f"{name:<56}{grew / MIB:>9.1f} MiB{bound / MIB:>7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
