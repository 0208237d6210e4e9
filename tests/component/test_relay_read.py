"""``Connection.relay_read``, the one-step relay of a read of chat lines to a partner here.

It must be invisible: whatever a client sends, in whatever pieces, the
partner gets the same bytes and both ends are left as the line-by-line way
(``receive`` then ``drain``) leaves them. The fast step only takes what it
can do exactly; everything else falls through untouched.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ipc import messages as m
from ipc.counts import COUNTS
from wire.budget import Pace
from wire.dialects import LEGACY, LINE
from workers.connection import Connection, Limits

from .test_connection import Effects

WORKER = 0
LIMITS = Limits.of(WORKER, sendq=1 << 20, max_line=64)


def session(limits: Limits = LIMITS, peer_dialect: object = LINE) -> tuple[Connection, Connection]:
    """``a`` (id 5) and ``b`` (id 6) in session 10, both on this worker, outputs empty."""
    a = Connection(1, LINE, limits, Effects(), now=0.0)
    b = Connection(2, peer_dialect, limits, Effects(), now=0.0)  # type: ignore[arg-type]
    for conn, cid in ((a, 5), (b, 6)):
        assert conn.welcome(cid, 500)
        conn.drain()
    a.receive(b"PING\n", 0.0)  # a's first line: the sniffing of the wrong port is over
    a.drain()
    assert not b.paired(m.Paired(2, 10, 5, WORKER, 1, False), a)
    assert a.paired(m.Paired(1, 10, 6, WORKER, 2, True), b)
    a.take_output(), b.take_output()
    return a, b


def slow(conn: Connection, data: bytes, now: float) -> None:
    conn.receive(data, now)
    conn.drain(now)


def fast(conn: Connection, data: bytes, now: float) -> None:
    if not conn.relay_read(data, now):
        slow(conn, data, now)


def output(conn: Connection) -> bytes:
    """What the socket got: written at once, then this tick's output behind it."""
    effects = conn.effects
    assert isinstance(effects, Effects)
    direct, effects.direct = bytes(effects.direct), bytearray()
    return direct + bytes(conn.take_output())


def pending(conn: Connection) -> int:
    """Bytes its decoder holds (none before its first bytes: it has no decoder yet)."""
    return conn.decoder.pending if conn.decoder is not None else 0


def state(a: Connection, b: Connection) -> tuple[object, ...]:
    return (
        output(a), output(b), a.session, b.session, a.request,
        a.leaving, pending(a), list(a.ready or ()), a.last_seen,
    )  # fmt: skip


LINES = st.lists(
    st.one_of(
        st.text(alphabet="abc xyz019.:", max_size=20),
        st.sampled_from(["", "#GOODBYE#", "#CLOSE#", "GET", "h\u00e9", "x" * 70, "a#b"]),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(LINES, st.lists(st.integers(1, 40), max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_the_partner_gets_the_same_bytes_and_both_ends_the_same_state(
    lines: list[str], cuts: list[int], end: str
) -> None:
    data = "".join(line + end for line in lines).encode() + b"\xff\n" * ("h\u00e9" in lines)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    pieces.append(data[at:])
    a1, b1 = session()
    a2, b2 = session()
    for i, piece in enumerate(p for p in pieces if p):
        slow(a1, piece, float(i))
        fast(a2, piece, float(i))
    assert state(a1, b1) == state(a2, b2)


PACED = Limits(WORKER, 64, LIMITS.tick, LIMITS.high, LIMITS.low, LIMITS.window,
               Pace.of(rate=2.0, burst=16, max_line=64))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, max_size=6))
def test_a_paced_client_spends_the_same_budget_either_way(reads: list[list[str]]) -> None:
    a1, b1 = session(PACED)
    a2, b2 = session(PACED)
    a1.budget = a2.budget = None  # made at the first read, either way
    for i, lines in enumerate(reads):
        data = "".join(line + "\n" for line in lines).encode()
        if data:
            slow(a1, data, i / 4)
            fast(a2, data, i / 4)
    assert state(a1, b1) == state(a2, b2)
    budgets = [a.budget for a in (a1, a2)]
    assert (budgets[0] is None) == (budgets[1] is None) == (not any(reads))
    if budgets[0] is not None and budgets[1] is not None:
        assert budgets[0].lines.tokens == budgets[1].lines.tokens
        assert budgets[0].bytes.tokens == budgets[1].bytes.tokens


def test_a_read_of_chat_lines_is_relayed_in_one_step():
    a, b = session()
    before = COUNTS.lines[a.path]
    assert a.relay_read(b"hello\n\nthere you\n", 3.0)
    assert output(b) == b"MSG hello\nMSG \nMSG there you\n"
    assert COUNTS.lines[a.path] == before + 3
    assert a.last_seen == 3.0
    assert pending(a) == 0 and not output(a)


def test_anything_the_fast_step_cannot_do_exactly_falls_through_untouched():
    a, b = session()
    for data in (
        b"half a line",  # not ended
        b"bye\n#GOODBYE#\n",  # a command
        b"crlf\r\n",
        b"\xff\n",  # not UTF-8: ERROR ENCODING
        b"x" * 65 + b"\n",  # over --max-line: ERROR TOO_LONG
    ):
        assert not a.relay_read(data, 1.0), data
        assert not output(b) and pending(a) == 0 and a.last_seen == 0.0
    assert a.relay_read("caf\u00e9\n".encode(), 1.0)  # UTF-8 beyond ASCII is chat too
    assert output(b) == "MSG caf\u00e9\n".encode()


def test_not_in_one_step_when_something_waits_or_the_partner_is_elsewhere():
    a, b = session()
    a.receive(b"part", 0.0)  # the start of a line waits
    assert not a.relay_read(b"ial\n", 1.0)
    a, b = session()
    slow(a, b"x" * 70, 0.0)  # over --max-line: its end is discarded up to the line break
    assert pending(a) == 0 and not a.relay_read(b"end of it\n", 1.0)
    slow(a, b"end of it\n", 1.0)
    assert output(a) == b"ERROR TOO_LONG\n" and not output(b)
    a, b = session()
    b.pause_writing()  # the partner's output is backed up: the lines are held
    assert not a.relay_read(b"hi\n", 1.0)
    a, b = session(peer_dialect=LEGACY)  # a legacy partner gets records
    assert not a.relay_read(b"hi\n", 1.0)
    a, b = session()
    a.crossing = True  # the first line after a pairing may be a crossed CONNECT
    assert not a.relay_read(b"CONNECT 6\n", 1.0)


def test_the_budget_pays_for_every_line_or_none_go_in_one_step():
    """What the budget allows at once counts each line as the longest there may be
    (``Budget.allowance``); more than that is left to the slow way, which takes
    a line at a time and pays what each really cost."""
    pace = Pace.of(rate=1.0, burst=16, max_line=64)  # 256 bytes: 3 lines of 66 at once
    assert pace is not None
    limits = Limits(WORKER, 64, LIMITS.tick, LIMITS.high, LIMITS.low, LIMITS.window, pace)
    a, b = session(limits)
    a.budget = None  # as a client that has sent nothing yet: its first read makes it
    assert not a.relay_read(b"1\n2\n3\n4\n", 0.0)
    assert a.budget is not None and a.budget.allowance(0.0) == 3
    assert not a.relay_read(b"1\n2\n3\n4\n", 0.0)
    assert a.relay_read(b"1\n2\n3\n", 0.0)
    assert output(b) == b"MSG 1\nMSG 2\nMSG 3\n"
    assert a.budget.lines.level(0.0) == 13 and a.budget.bytes.level(0.0) == 250
