"""The soak's live count of violations: each rule it can tell at once, and what it must excuse.

``loadgen.Conn.check`` runs on every chat line as it arrives, for the
progress line; it must never count what the full checker would accept.
"""

from __future__ import annotations

import asyncio
from typing import cast

from scripts.loadgen import Conn, _Counters
from scripts.rules import CLOSE, GOODBYE, message


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


def pair() -> tuple[_Counters, Conn, Conn]:
    """Two connections in one load, ``a`` (uid 1, id 11) and ``b`` (uid 2, id 12)."""
    counters = _Counters()
    a, b = (
        Conn(uid, cast(asyncio.StreamReader, None), cast(asyncio.StreamWriter, _Writer()),
             counters.tally)
        for uid in (1, 2)
    )  # fmt: skip
    for conn, cid in ((a, 11), (b, 12)):
        counters.conns[conn.uid] = conn
        conn.seen(f"WELCOME {cid}", counters)
    return counters, a, b


def send(conn: Conn, *lines: str) -> None:
    asyncio.run(conn.send(*lines))


def chat(conn: Conn, n: int) -> list[str]:
    """``n`` attributable lines from ``conn``, sent."""
    lines = [message(conn.uid, conn.k, conn.sent + i) for i in range(n)]
    send(conn, *lines)
    return lines


def read(counters: _Counters, conn: Conn, *lines: str) -> int:
    """Violations counted while ``conn`` reads ``MSG`` for each of ``lines``."""
    before = counters.tally.violations
    for line in lines:
        conn.seen(f"MSG {line}", counters)
    return counters.tally.violations - before


def connected(counters: _Counters, a: Conn, b: Conn) -> None:
    a.seen(f"CONNECTED {b.cid}", counters)
    b.seen(f"CONNECTED {a.cid}", counters)


def test_every_line_of_a_session_in_order_counts_nothing() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    lines = chat(a, 5)
    assert read(counters, b, *lines) == 0
    assert counters.tally.relayed == 5


def test_a_line_missing_between_two_that_came_is_counted() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    lines = chat(a, 3)
    assert read(counters, b, lines[0], lines[2]) == 1


def test_a_line_that_overtook_or_repeats_another_is_counted() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    lines = chat(a, 3)
    assert read(counters, b, lines[0], lines[2], lines[1]) == 2  # the gap, then the order
    assert read(counters, b, lines[2]) == 1


def test_a_line_the_partner_never_sent_is_counted() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    chat(a, 1)
    assert read(counters, b, message(a.uid, a.k, 7)) == 1  # no such line
    assert read(counters, b, message(99, 1, 0)) == 1  # no such connection
    assert read(counters, b, "GET", "hello there") == 0  # not attributable: replay's job


def test_a_line_after_its_senders_goodbye_is_counted() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    first = chat(a, 1)
    send(a, GOODBYE)
    late = chat(a, 1)  # a has not read ENDED yet: same session number
    assert read(counters, b, *first, *late) == 1


def test_lines_sent_after_the_partner_left_and_never_relayed_are_excused() -> None:
    """b says goodbye; a's next lines reach nobody; they pair again at once.

    a's lines after ``CONNECT`` still carry its old session number, and the
    lines in between were answered as commands: no gap.
    """
    counters, a, b = pair()
    connected(counters, a, b)
    first = chat(a, 2)
    assert read(counters, b, *first) == 0
    send(b, GOODBYE)
    b.seen(f"ENDED {a.cid}", counters)
    chat(a, 3)  # the server had a FREE by then: ERROR lines, nothing relayed
    a.seen(f"ENDED {b.cid}", counters)
    send(a, f"CONNECT {b.cid}")
    early = chat(a, 1)  # before a reads CONNECTED: still session 1's number
    b.seen(f"CONNECTED {a.cid}", counters)
    assert read(counters, b, *early) == 0
    a.seen(f"CONNECTED {b.cid}", counters)
    assert read(counters, b, *chat(a, 2)) == 0


def test_a_close_between_two_lines_that_came_is_counted() -> None:
    counters, a, b = pair()
    connected(counters, a, b)
    first = chat(a, 1)
    send(a, CLOSE)
    assert read(counters, b, *first, *chat(a, 1)) == 1
