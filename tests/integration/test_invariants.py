"""The five invariants of protocol v1, under load and under races, on one worker and across two."""

from __future__ import annotations

import threading

import psutil
import pytest

from tests.integration.harness import Client, pair, two_clients

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LINES = 20_000
ROUNDS = 40


def read_msgs(client: Client, count: int, into: list[str]) -> None:
    for _ in range(count):
        into.append(client.line(timeout=30))


def test_20000_lines_each_way_arrive_in_order(server, placement):
    """Invariant 2: in order, none lost, both directions at once."""
    a, b = two_clients(server, placement)
    pair(a, b)
    got: dict[str, list[str]] = {"a": [], "b": []}
    readers = [
        threading.Thread(target=read_msgs, args=(a, LINES, got["a"])),
        threading.Thread(target=read_msgs, args=(b, LINES, got["b"])),
    ]
    for r in readers:
        r.start()
    a.send("".join(f"a{i}\n" for i in range(LINES)).encode())
    b.send("".join(f"b{i}\n" for i in range(LINES)).encode())
    for r in readers:
        r.join(60)
        assert not r.is_alive()
    assert got["b"] == [f"MSG a{i}" for i in range(LINES)]
    assert got["a"] == [f"MSG b{i}" for i in range(LINES)]


def drain_until(client: Client, last: str) -> list[str]:
    lines = []
    while (line := client.line()) != last:
        lines.append(line)
    return lines


def test_no_line_crosses_a_session_boundary(server, placement):
    """Invariant 2: lines in flight when a session ends never reach a later session.

    Each round ``a`` sends a burst and ends the session while ``b`` is still
    sending its own burst; then they pair again. Everything ``a`` sent before
    its goodbye reaches ``b`` in order; of ``b``'s burst, ``a`` gets a prefix and
    nothing later; no round's line shows up in another round.
    """
    a, b = two_clients(server, placement)
    for r in range(ROUNDS):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        pair(first, second)
        burst = 50
        a_lines = [f"r{r}a{i}" for i in range(burst)]
        b_lines = [f"r{r}b{i}" for i in range(burst)]
        b.send("".join(x + "\n" for x in b_lines).encode())
        a.send("".join(x + "\n" for x in [*a_lines, "#GOODBYE#"]).encode())
        a_got = drain_until(a, f"ENDED {b.id}")
        b_got = drain_until(b, f"ENDED {a.id}")
        assert b_got == [f"MSG {x}" for x in a_lines]
        delivered = [x.removeprefix("MSG ") for x in a_got]
        assert delivered == b_lines[: len(delivered)]
        # b's lines that arrived after its session ended were commands
        b.send("PING")
        refused = drain_until(b, "PONG")
        assert refused == [
            f"ERROR UNKNOWN_COMMAND {x}" for x in b_lines[len(b_lines) - len(refused) :]
        ]
        assert len(delivered) + len(refused) <= burst
        a.quiet()


def crossed_connect_round(a: Client, b: Client) -> list[str]:
    """``a`` and ``b`` ask for each other at once; returns the extra lines either saw.

    Each sends ``sync`` right after its CONNECT: whatever became of the CONNECT
    (a session, ERROR TALKING, or a message because its sender was paired
    first), ``sync`` is handled after it and relayed, so once both have read
    ``MSG sync`` every consequence of the race has arrived.
    """
    a.send(f"CONNECT {b.id}\nsync")
    b.send(f"CONNECT {a.id}\nsync")
    assert a.line() == f"CONNECTED {b.id}"
    assert b.line() == f"CONNECTED {a.id}"
    extra = drain_until(a, "MSG sync") + drain_until(b, "MSG sync")
    a.send("#GOODBYE#")  # ENDED comes after anything the race still owes either of them
    return extra + drain_until(a, f"ENDED {b.id}") + drain_until(b, f"ENDED {a.id}")


def test_crossed_connects_make_exactly_one_session(server, placement):
    """Invariant 3, A->B with B->A: one session, and the other CONNECT is refused or relayed."""
    a, b = two_clients(server, placement)
    for _ in range(ROUNDS):
        extra = crossed_connect_round(a, b)
        assert len(extra) == 1, extra
        assert extra[0] in {
            f"ERROR TALKING {b.id}",  # a's CONNECT reached the matchmaker second
            f"ERROR TALKING {a.id}",
            f"MSG CONNECT {a.id}",  # b was paired before its worker read its CONNECT
            f"MSG CONNECT {b.id}",
        }, extra


def test_two_requesters_race_for_one_target(server, placement):
    """Invariant 3, A->C with B->C: exactly one wins; the other gets ERROR BUSY."""
    a, c = two_clients(server, placement)
    b = server.client()
    for _ in range(ROUNDS):
        a.send(f"CONNECT {c.id}")
        b.send(f"CONNECT {c.id}")
        replies = {a.id: a.line(), b.id: b.line()}
        winners = [cid for cid, line in replies.items() if line == f"CONNECTED {c.id}"]
        assert len(winners) == 1, replies
        loser = b.id if winners[0] == a.id else a.id
        assert replies[loser] == f"ERROR BUSY {c.id}"
        c.expect(f"CONNECTED {winners[0]}")
        c.send("#GOODBYE#")
        c.expect(f"ENDED {winners[0]}")
        (a if winners[0] == a.id else b).expect(f"ENDED {c.id}")


def test_a_vanishing_partner_mid_stream(server, placement):
    """Invariant 4: the partner of a client that vanishes mid-stream gets ENDED, pairs again."""
    a, b = two_clients(server, placement)
    c = server.client()
    pair(a, b)
    a.send("".join(f"x{i}\n" for i in range(2000)).encode() + b"half a li")
    a.sock.close()
    lines = drain_until(b, f"ENDED {a.id}")
    assert lines == [f"MSG x{i}" for i in range(len(lines))]
    pair(c, b)
    c.send("fresh")
    b.expect("MSG fresh")


def test_memory_is_bounded_by_the_line_limit(server):
    """Invariant 5 (inbound): 64 MB without a newline costs the worker no more than the limit."""
    a = server.client()
    worker = psutil.Process(server.pid_of(f"worker {server.worker_of(a)}"))
    before = worker.memory_info().rss
    chunk = b"z" * (1 << 20)
    for _ in range(64):
        a.send(chunk)
    a.send(b"\nPING\n")
    a.expect("ERROR TOO_LONG")
    a.expect("PONG")
    grown = worker.memory_info().rss - before
    assert grown < 16 << 20, f"worker grew by {grown} bytes"
