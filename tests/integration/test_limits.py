"""Flood control and per-address limits, on the real server.

Per address (``--max-per-ip``, ``--accept-rate``): clients come from several
loopback addresses (127.0.0.2, 127.0.0.3, ...); one address at its limit is
refused ``ERROR TOO_MANY``, the others are not, and it may connect again as
soon as one of its connections is gone.

A client over its budget (``--rate``, ``--burst``) is slowed, not cut: every
line it sent arrives, in order, at the budget's pace, while others on its
worker are answered as before. Timing is asserted from measurements (no
sleeps): the bucket cannot have let the lines through faster than
``(lines - burst) / rate`` seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.integration.harness import Client, LegacyClient, Server, pair
from tests.integration.test_faults import new_pid, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def read_lines(client: Client, count: int, got: list[str], done: list[float]) -> None:
    """Read ``count`` lines into ``got``; note when the last one came."""
    for _ in range(count):
        got.append(client.line(timeout=20.0))
    done.append(time.monotonic())


def test_a_flooder_is_paced_loses_nothing_and_keeps_nobody_waiting(
    start_server: Callable[..., Server],
) -> None:
    rate, burst, lines = 40.0, 20, 140
    server = start_server("--rate", str(rate), "--burst", str(burst), workers=1)
    flooder, reader = server.client(), server.client()
    pair(flooder, reader)
    other, partner = server.client(), server.client()
    pair(other, partner)

    got: list[str] = []
    done: list[float] = []
    receiver = threading.Thread(target=read_lines, args=(reader, lines, got, done), daemon=True)
    receiver.start()
    started = time.monotonic()
    flooder.send("".join(f"flood {i}\n" for i in range(lines)).encode())  # all at once

    # meanwhile, another pair on the same worker chats as usual
    for i in range(10):
        asked = time.monotonic()
        other.send(f"ping {i}")
        partner.expect(f"MSG ping {i}", timeout=5.0)
        partner.send(f"pong {i}")
        other.expect(f"MSG pong {i}", timeout=5.0)
        assert time.monotonic() - asked < 0.5, "a round trip waited for the flooder"
    assert not done, "the flood was over before the other pair was done: nothing was tested"

    receiver.join(timeout=30.0)
    assert done, f"only {len(got)} of {lines} lines arrived"
    assert got == [f"MSG flood {i}" for i in range(lines)]  # every line, in order
    took = done[0] - started
    least = (lines - burst) / rate  # the bucket's bound: at most rate * t + burst lines in t
    assert took >= 0.9 * least, f"{lines} lines in {took:.2f}s: faster than the budget allows"
    assert took < least + 3.0, f"{lines} lines in {took:.2f}s: slower than the budget's pace"
    flooder.send("#GOODBYE#")  # and the flooder is still served, at its pace
    flooder.expect(f"ENDED {reader.id}")
    reader.expect(f"ENDED {flooder.id}")


@pytest.mark.parametrize("legacy", [False, True], ids=["moved", "legacy"])
def test_a_flood_behind_a_connect_keeps_its_order_and_pace_across_workers(
    start_server: Callable[..., Server], legacy: bool
) -> None:
    """The lines wait behind the CONNECT; the flooder moves to its partner's worker with
    them, undecoded, and with what it had left of its budget (no fresh burst), or, a
    legacy client that cannot move, has them relayed across at the same pace."""
    rate, burst, lines = 40.0, 20, 100
    server = start_server("--rate", str(rate), "--burst", str(burst), "--legacy-port", "0")
    reader = server.client()
    if legacy:
        flooder: Client | LegacyClient = LegacyClient(server.host, server.legacy_port)
        server.opened.append(flooder)  # type: ignore[arg-type]  # closed at teardown too
        flooder.send("GET")
        flooder.recv()
        body = b"".join(flooder.record(f"flood {i}") for i in range(lines))
        head = flooder.record(f"CONNECT {reader.id}")
    else:
        flooder = server.client()
        body = "".join(f"flood {i}\n" for i in range(lines)).encode()
        head = f"CONNECT {reader.id}\n".encode()
    if not legacy:  # round robin: the two ends start on different workers
        assert server.worker_of(reader) != server.worker_of(flooder)
    started = time.monotonic()
    flooder.sock.sendall(head + body)
    reader.line()  # CONNECTED
    got = [reader.line(timeout=20.0) for _ in range(lines)]
    took = time.monotonic() - started
    assert got == [f"MSG flood {i}" for i in range(lines)]
    if not legacy:
        assert server.worker_of(flooder) == server.worker_of(reader)  # type: ignore[arg-type]
    least = (lines + 2 - burst) / rate  # GET and CONNECT came out of the same budget
    assert took >= 0.9 * least, f"{lines} lines in {took:.2f}s: faster than the budget allows"
    assert took < least + 3.0, f"{lines} lines in {took:.2f}s: slower than the budget's pace"


# ---- per-address limits ------------------------------------------------------------------


def refused(server: Server, source: str) -> None:
    """A connection from ``source`` gets ERROR TOO_MANY and is closed."""
    c = server.connect(source=source)
    c.expect("ERROR TOO_MANY")
    c.expect_closed()


def test_one_address_at_its_limit_is_refused_and_the_others_are_not(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--max-per-ip", "2", "--legacy-port", "0")
    first, second = (server.client(source="127.0.0.2") for _ in range(2))
    refused(server, "127.0.0.2")
    legacy = LegacyClient(server.host, server.legacy_port, source="127.0.0.2")
    server.opened.append(legacy)  # type: ignore[arg-type]
    legacy.expect("ABORT")  # the original client's word for a refusal
    others = [server.client(source="127.0.0.3") for _ in range(2)]
    refused(server, "127.0.0.3")
    server.client(source="127.0.0.4")
    pair(first, others[0])  # those let in are served as anyone
    first.send("hi")
    others[0].expect("MSG hi")

    second.send("#CLOSE#")
    second.expect("BYE")
    second.expect_closed()  # its worker let go of it before closing: the address has room
    again = server.client(source="127.0.0.2")
    refused(server, "127.0.0.2")
    log = server.log()
    assert log.count("ERROR TOO_MANY") == 4, log
    assert log.count("drop reason=too_many client=none peer=127.0.0.2:") == 3, log
    assert "--max-per-ip 2" in log
    assert again.id


def test_a_dead_workers_clients_no_longer_count(start_server: Callable[..., Server]) -> None:
    server = start_server("--max-per-ip", "2")
    a, b = server.client(source="127.0.0.2"), server.client(source="127.0.0.2")
    assert {server.worker_of(a), server.worker_of(b)} == {1, 2}  # round robin
    name = f"worker {server.worker_of(a)}"
    old = server.pid_of(name)
    refused(server, "127.0.0.2")
    os.kill(old, signal.SIGKILL)
    with pytest.raises(AssertionError, match="closed"):
        a.line()
    wait_for(lambda: new_pid(server, name, old), what=f"a new {name}")
    server.client(source="127.0.0.2")  # the dead worker's count went with it
    refused(server, "127.0.0.2")


def test_an_address_opening_connections_too_fast_is_refused(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--accept-rate", "2")
    opened = [server.connect(source="127.0.0.2") for _ in range(3)]  # within a second
    for c in opened[:2]:
        c.welcome()
    opened[2].expect("ERROR TOO_MANY")
    opened[2].expect_closed()
    for _ in range(2):  # another address has its own rate
        server.client(source="127.0.0.3")
    assert "--accept-rate" in server.log()
