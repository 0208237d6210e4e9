"""workers.connection.Connection, driven directly: no sockets, no loop, no processes.

Each test plays the lines of a client and the messages of the matchmaker into
the core, and checks the exact bytes it would write, the messages it would send
and what it says about reading.
"""

from __future__ import annotations

import pickle

import pytest

from ipc import messages as m
from wire.dialects import LEGACY, LINE, Dialect
from wire.replies import Clients, Ended, Welcome
from workers.connection import (
    BACKED_UP,
    GO,
    NEXT_TICK,
    NOTHING,
    PAUSE,
    READ,
    WAIT,
    WRONG_PORT,
    Connection,
    Limits,
)
from workers.moving import Moving

WORKER = 0
LIMITS = Limits.of(WORKER, sendq=1 << 20, max_line=4096)


class Effects:
    """A connection's effects, kept for the test to read."""

    def __init__(self) -> None:
        self.sent: list[m.ToMatchmaker] = []
        self.writes = 0  # times the output went from empty to not
        self.clock = 1000  # what stamp() says: one tick more each time
        self.direct = bytearray()  # written at once (Connection.write_now), in order

    def send(self, message: m.ToMatchmaker) -> None:
        self.sent.append(message)

    def wrote(self) -> None:
        self.writes += 1

    def write_now(self, data: bytes) -> None:
        self.direct += data

    def stamp(self) -> int:
        self.clock += 1
        return self.clock

    def take(self) -> list[m.ToMatchmaker]:
        sent, self.sent = self.sent, []
        return sent


def client(
    key: int = 1, cid: int = 5, limits: Limits = LIMITS, dialect: Dialect = LINE
) -> tuple[Connection, Effects]:
    effects = Effects()
    conn = Connection(key, dialect, limits, effects, now=0.0)
    assert effects.take() == [] and conn.request == m.Register(key)
    assert conn.welcome(cid, 500)
    assert conn.drain() == READ
    assert bytes(conn.take_output()) == dialect.render(Welcome(cid))
    return conn, effects


def out(conn: Connection) -> bytes:
    return bytes(conn.take_output())


def type_(conn: Connection, data: bytes) -> int:
    conn.receive(data, now=1.0)
    return conn.drain()


def pair(conn: Connection, session: int, peer: int, *, here: Connection | None = None,
         requested: bool = False, peer_worker: int = WORKER + 1) -> bool:  # fmt: skip
    worker = WORKER if here is not None else peer_worker
    key = here.key if here is not None else 99
    return conn.paired(m.Paired(conn.key, session, peer, worker, key, requested), here)


def test_welcome_is_the_first_line_and_lines_before_it_wait():
    effects = Effects()
    conn = Connection(1, LINE, LIMITS, effects, now=0.0)
    conn.receive(b"PING\nGET\n", now=0.5)
    assert conn.drain() == PAUSE  # the id comes first
    assert out(conn) == b""
    assert conn.welcome(5, 500)
    assert conn.drain() == READ  # PING answered, GET waits with nothing behind it
    assert out(conn) == b"WELCOME 5\nPONG\n"
    assert effects.take() == [m.Get(5, False, 1)]


def test_replies_come_in_the_order_of_the_lines_while_a_request_waits():
    conn, effects = client()
    assert type_(conn, b"GET\nPING\nCONNECT\nHELP\n") == PAUSE
    assert effects.take() == [m.Get(5, False, 1)]
    assert out(conn) == b""  # PING waits behind GET, undecoded
    assert conn.answer(Clients(((5, 0, ""),)))
    assert conn.drain() == READ
    assert out(conn).startswith(b"CLIENTS 5=FREE\nPONG\nERROR USAGE CONNECT <id>\n")
    assert effects.take() == []


def test_a_line_sent_right_after_connect_is_a_message_once_the_session_starts():
    conn, effects = client()
    assert type_(conn, b"CONNECT 6\nhello there\n") == PAUSE
    assert effects.take() == [m.Connect(5, 6, 1, 1001)]
    assert pair(conn, 10, 6, requested=True)
    assert conn.drain() == READ
    assert out(conn) == b"CONNECTED 6\n"
    assert effects.take() == [m.Relay(5, 10, "hello there", 1)]


def test_a_line_to_a_partner_here_goes_straight_into_its_output():
    a, _ = client(key=1, cid=5)
    b, b_effects = client(key=2, cid=6)
    assert not pair(b, 10, 5, here=a)
    assert pair(a, 10, 6, here=b, requested=True)
    out(a), out(b)
    assert type_(a, b"hi\n#GOODBYE#\nafter\n") == PAUSE
    assert out(b) == b"MSG hi\n"
    assert b_effects.writes == 3  # WELCOME, CONNECTED, MSG: once each time its output filled
    assert a.request == m.Goodbye(5, 10, 6, 1) and a.local_peer is None
    assert b.ended(10, 5)
    assert out(b) == b"ENDED 5\n" and b.local_peer is None


def test_crossed_goodbyes_end_once_each_and_the_late_answer_is_swallowed():
    conn, effects = client()
    pair(conn, 10, 6)
    out(conn)
    assert type_(conn, b"#GOODBYE#\nGET\n") == PAUSE
    assert effects.take() == [m.Goodbye(5, 10, 6, 1)]
    # the partner's goodbye came first: its ENDED answers ours, at once
    assert conn.ended(10, 6)
    assert conn.drain() == READ  # GET went out and waits
    assert effects.take() == [m.Get(5, False, 1)]
    assert out(conn) == b"ENDED 6\n"
    assert not conn.answer(Ended(6))  # the matchmaker's own answer to our goodbye
    assert out(conn) == b""
    assert conn.answer(Clients(((5, 0, ""), (6, 0, ""))))
    assert out(conn) == b"CLIENTS 5=FREE 6=FREE\n"


def test_a_stale_ended_changes_nothing():
    conn, _ = client()
    pair(conn, 11, 6)
    out(conn)
    assert not conn.ended(10, 6)
    assert conn.session == 11 and out(conn) == b""


def test_lines_to_another_worker_are_numbered_and_kept_until_confirmed():
    conn, effects = client()
    pair(conn, 10, 6)
    type_(conn, b"one\ntwo\nthree\n")
    assert effects.take() == [
        m.Relay(5, 10, t, i) for i, t in enumerate(["one", "two", "three"], 1)
    ]
    assert conn.confirmed(m.Confirm(1, 10, 2))
    assert conn.sent is not None and list(conn.sent) == [(3, "three")]
    assert not conn.confirmed(m.Confirm(1, 9, 3))  # another session's
    assert list(conn.sent) == [(3, "three")]


def test_a_sender_past_its_window_is_held_until_confirmed():
    """The sendq bounds what one client may have in flight: past the window, it pauses."""
    limits = Limits.of(WORKER, sendq=4096, max_line=4096)
    conn, effects = client(limits=limits)
    pair(conn, 10, 6)
    line = b"x" * 300 + b"\n"
    assert type_(conn, line * 200) == PAUSE
    assert [r.seq for r in effects.take()] == list(range(1, 65))
    assert conn.held() == BACKED_UP  # past the window (sendq/4) by at most a batch
    assert conn.drain() == PAUSE and effects.take() == []
    assert conn.confirmed(m.Confirm(1, 10, 60))
    assert conn.held() == BACKED_UP  # 4 lines, 1,200 bytes: still over the 1,024 window
    assert conn.confirmed(m.Confirm(1, 10, 61))
    assert conn.held() == GO
    assert conn.drain() == PAUSE
    assert [r.seq for r in effects.take()] == list(range(65, 129))


def test_a_backed_up_partner_here_holds_the_sender():
    limits = Limits.of(WORKER, sendq=8192, max_line=4096)
    a, _ = client(key=1, cid=5, limits=limits)
    b, _ = client(key=2, cid=6, limits=limits)
    pair(b, 10, 5, here=a)
    pair(a, 10, 6, here=b, requested=True)
    assert b.pause_writing() and not b.pause_writing()
    assert type_(a, b"hi\n") == PAUSE
    assert a.held() == BACKED_UP and out(b) == b"CONNECTED 5\n"
    assert b.resume_writing()
    assert a.drain() == READ
    assert out(b) == b"MSG hi\n"


def test_a_full_tick_waits_for_the_next_one_and_reading_goes_on():
    limits = Limits.of(WORKER, sendq=8192, max_line=4096)  # a tick of 2048 bytes
    conn, _ = client(limits=limits)
    assert type_(conn, b"PING\n" * 500) == READ
    assert conn.held() == NEXT_TICK
    assert out(conn) == b"PONG\n" * 7 * 64  # the first batch past the tick ends it
    assert conn.held() == GO and conn.drain() == READ
    assert out(conn) == b"PONG\n" * (500 - 7 * 64)


def test_a_full_tick_with_a_read_behind_it_pauses_reading():
    limits = Limits.of(WORKER, sendq=8192, max_line=4096)
    conn, _ = client(limits=limits)
    assert type_(conn, b"PING\n" * 1000) == PAUSE  # 2,760 bytes wait: more than a tick
    assert conn.held() == NEXT_TICK and conn.has_input()


def test_lines_from_another_worker_are_written_once_and_confirmed():
    conn, effects = client()
    pair(conn, 10, 6)
    out(conn)
    assert conn.deliver(m.Deliver(1, 10, "a", 1)) and conn.deliver(m.Deliver(1, 10, "b", 2))
    assert conn.deliver(m.Deliver(1, 10, "a", 1))  # again, after a matchmaker restart
    assert not conn.deliver(m.Deliver(1, 9, "old", 3))
    assert out(conn) == b"MSG a\nMSG b\n"
    conn.confirm()
    assert effects.take() == [m.Received(5, 10, 2)]


def test_a_line_that_comes_before_the_one_it_follows_waits_for_it():
    """Between hosts a line can go missing (a Redis that restarted): the ones after it
    are dropped, not written, until it comes again with them."""
    conn, effects = client()
    pair(conn, 10, 6)
    out(conn)
    assert conn.deliver(m.Deliver(1, 10, "a", 1))
    assert conn.deliver(m.Deliver(1, 10, "c", 3))  # "b" went missing
    assert out(conn) == b"MSG a\n"
    conn.confirm()
    assert effects.take() == [m.Received(5, 10, 1)]  # the sender keeps "b" and "c"
    for seq, text in ((2, "b"), (3, "c")):  # sent again, in order
        assert conn.deliver(m.Deliver(1, 10, text, seq))
    assert out(conn) == b"MSG b\nMSG c\n"


def test_a_new_matchmaker_hears_the_session_being_ended_and_its_unconfirmed_lines():
    conn, effects = client()
    pair(conn, 10, 6)
    type_(conn, b"one\ntwo\n")
    assert conn.confirmed(m.Confirm(1, 10, 1))
    type_(conn, b"#GOODBYE#\n")
    effects.take()
    assert not conn.confirmed(m.Confirm(1, 10, 2))  # ending: kept for a new matchmaker
    state, lines = conn.hello_state()
    assert state == m.ClientState(1, 5, 10, 6, 10, 500)
    assert lines == [m.Relay(5, 10, "two", 2)]
    assert conn.request == m.Goodbye(5, 10, 6, 1)  # the hello asks it again
    assert conn.answer(Ended(6))
    assert conn.hello_state() == (m.ClientState(1, 5, 0, 0, 10, 500, last_peer=6), [])


def test_a_client_leaving_still_reports_its_id_until_bye():
    conn, effects = client()
    assert type_(conn, b"#CLOSE#\nignored\n") == READ
    assert effects.take() == [m.Drop(5, 1, answer=True)]
    assert conn.cid == 0 and conn.leaving and not conn.has_input()
    assert conn.hello_state() == (None, [])  # FREE and leaving: nothing to keep
    conn.receive(b"more\n", now=2.0)
    assert not conn.has_input()


def test_eof_after_the_last_line_is_a_close():
    conn, effects = client()
    conn.receive(b"GET\n", now=1.0)
    assert conn.receive_eof()
    assert conn.drain() == PAUSE
    assert effects.take() == [m.Get(5, False, 1)]
    conn.answer(Clients(((5, 0, ""),)))
    assert conn.drain() == READ
    assert effects.take() == [m.Drop(5, 1, answer=True)]


def test_a_bad_line_gets_an_error_and_nothing_else_is_lost():
    conn, effects = client()
    assert type_(conn, b"CONNECT 0\nPING\n") == READ
    assert out(conn) == b"ERROR USAGE CONNECT <id>\nPONG\n"
    assert effects.take() == []


def test_a_move_with_lines_in_flight_goes_on_where_it_stopped():
    """export -> pickle -> arriving: lines decoded and not handled, bytes not decoded, output
    not written and the request all arrive, in order, under the new key."""
    conn, _ = client(key=3, cid=100)
    assert type_(conn, b"CONNECT 6\nPING\nagain\nhel") == PAUSE
    conn.write(b"ERROR SELF\n")
    assert conn.movable(100) and not conn.movable(101)
    state = pickle.loads(pickle.dumps(conn.export(9, now=4.0)))
    assert isinstance(state, Moving)
    assert (state.session, state.cid, state.ready, state.out, state.idle) == (
        9,
        100,
        ("PING", "again"),
        b"ERROR SELF\n",
        3.0,
    )
    conn.moved()
    assert conn.closed and out(conn) == b""
    effects = Effects()
    there = Connection.arriving(8, state, LINE, LIMITS, effects, now=10.0)
    assert there.request == m.Connect(100, 6, 8, 1001) and there.last_seen == 7.0
    assert there.since == 500  # when it got its id, wherever it goes
    partner, _ = client(key=2, cid=6)
    assert not pair(partner, 9, 100, here=there)
    assert pair(there, 9, 6, here=partner, requested=True)
    there.receive(b"lo\n", now=11.0)
    assert there.drain() == READ
    assert out(there) == b"ERROR SELF\nCONNECTED 6\n"
    assert out(partner) == b"CONNECTED 100\nMSG PING\nMSG again\nMSG hello\n"
    assert effects.take() == []


def test_an_arriving_client_without_a_request_has_none_here():
    state = Moving(9, 101, None, (), LINE.decoder(64), 0.0, b"", 4)
    there = Connection.arriving(8, state, LINE, LIMITS, Effects(), now=0.0)
    assert there.request is None and there.cid == 101 and there.last_session == 4


def test_who_may_not_move():
    conn, _ = client()
    conn.receive(b"GET\n", now=1.0)
    conn.drain()
    assert not conn.movable(5)  # waits for an answer that is not the move's
    legacy, _ = client(dialect=LEGACY)
    assert not legacy.movable(5)  # paced output


def test_a_closed_connection_writes_nothing_and_holds_nobody():
    a, _ = client(key=1, cid=5)
    b, _ = client(key=2, cid=6)
    pair(b, 10, 5, here=a)
    pair(a, 10, 6, here=b, requested=True)
    out(a), out(b)
    b.pause_writing()
    b.close()
    assert a.held() == GO
    a.relay("lost on purpose")
    assert out(b) == b""


def test_matchmaker_replaced_forgets_owed_answers():
    conn, _ = client()
    pair(conn, 10, 6)
    type_(conn, b"#GOODBYE#\n")
    assert out(conn) == b"CONNECTED 6\n"
    conn.ended(10, 6)
    conn.matchmaker_replaced()
    assert conn.answer(Clients(((5, 0, ""), (6, 0, ""))))
    assert out(conn) == b"ENDED 6\nCLIENTS 5=FREE 6=FREE\n"


# ---- the budget (--rate, --burst) ---------------------------------------------------------

PACED = Limits.of(WORKER, sendq=1 << 20, max_line=4096, rate=10.0, burst=3)


def test_a_client_over_its_budget_waits_and_loses_nothing():
    """Lines past the burst wait undecoded, in order, until the budget has room again."""
    a, _ = client(key=1, cid=5, limits=PACED)
    b, _ = client(key=2, cid=6, limits=PACED)
    pair(b, 10, 5, here=a)
    pair(a, 10, 6, here=b, requested=True)
    out(a), out(b)
    a.receive(b"".join(b"line %d\n" % i for i in range(6)), now=1.0)
    assert a.drain(1.0) == WAIT  # the burst (3) was spent at once
    assert out(b) == b"MSG line 0\nMSG line 1\nMSG line 2\n"
    assert a.budget is not None and a.budget.due(1.0) == pytest.approx(0.1, abs=1e-6)
    assert a.drain(1.05) == WAIT and out(b) == b""
    assert a.drain(1.1) == WAIT and out(b) == b"MSG line 3\n"
    assert a.drain(1.3) == READ and out(b) == b"MSG line 4\nMSG line 5\n"


def test_an_idle_client_holds_no_output_buffer():
    """An empty bytearray per client was 56 bytes of every idle one; the empty output is
    one object shared by all of them, between ticks too."""
    conn, _ = client()
    assert conn.out is NOTHING
    assert type_(conn, b"PING\n") == READ
    assert out(conn) == b"PONG\n" and conn.out is NOTHING


def test_an_idle_client_holds_no_budget_and_its_first_lines_get_the_burst():
    """A budget is made at the first line, full, as one made at connect time would be
    by then: an idle client holds none, and waiting long earns no more than the burst."""
    conn, _ = client(limits=PACED)
    assert conn.budget is None
    conn.receive(b"PING\n" * 5, now=100.0)
    assert conn.drain(100.0) == WAIT and out(conn) == b"PONG\n" * 3
    assert conn.budget is not None
    assert conn.drain(100.1) == WAIT and out(conn) == b"PONG\n"


def test_without_a_budget_nothing_waits():
    conn, _ = client()
    assert conn.budget is None
    assert type_(conn, b"PING\n" * 500) == READ
    assert out(conn) == b"PONG\n" * 500


def test_half_a_line_over_budget_and_a_close_wait_their_turn():
    conn, effects = client(limits=PACED)
    conn.receive(b"PING\n" * 4 + b"PI", now=0.0)
    conn.receive_eof()
    assert conn.drain(0.0) == WAIT and out(conn) == b"PONG\n" * 3
    assert conn.drain(0.1) == WAIT and out(conn) == b"PONG\n"
    assert effects.take() == []
    conn.drain(0.2)  # the half line is dropped, then EOF is a #CLOSE#
    assert effects.take() == [m.Drop(5, 1, answer=True)]


def test_a_moving_client_takes_its_budget_along():
    """No fresh burst for moving: what it had spent stays spent on its new worker."""
    conn, _ = client(key=3, cid=100, limits=PACED)
    conn.receive(b"PING\nPING\nCONNECT 6\nPING\n", now=0.0)
    assert conn.drain(0.0) == PAUSE  # the CONNECT waits for its answer, a PING behind it
    assert conn.budget is not None and conn.budget.allowance(0.0) == 0
    state = pickle.loads(pickle.dumps(conn.export(9, now=0.0)))
    there = Connection.arriving(8, state, LINE, PACED, Effects(), now=500.0)
    assert there.budget is not None and there.budget.allowance(500.0) == 0
    assert there.budget.allowance(500.1) == 1


# ---- the original client on the line port -------------------------------------------------

RECORD_GET = b"GET\0" + bytes(range(1, 253))  # as the original pads: junk after the NUL


def record_of(text: bytes) -> bytes:
    return text + bytes(256 - len(text))  # padded with NULs only


@pytest.mark.parametrize(
    ("record", "chunk"),
    [(RECORD_GET, 256), (record_of(b"GET"), 256), (record_of(b"GET"), 1), (record_of(b"GET"), 3)],
)
def test_a_legacy_record_on_the_line_port_is_told_it_came_to_the_wrong_port(record, chunk):
    """The original client on the line port read WELCOME 1 as "(Friend): OME 1" and then
    hung: its NUL-padded records never end a line. (It writes a record at once; one that
    came in pieces with a line break in its padding would be answered as lines meanwhile.)"""
    conn, effects = client()
    verdicts = [type_(conn, record[i : i + chunk]) for i in range(0, 256, chunk)]
    assert verdicts[-1] == WRONG_PORT
    assert out(conn) == b"" and effects.take() == []  # nothing of it was taken as a line


def test_the_same_before_its_id_came():
    effects = Effects()
    conn = Connection(1, LINE, LIMITS, effects, now=0.0)
    conn.receive(RECORD_GET, now=0.5)
    assert conn.drain() == WRONG_PORT


@pytest.mark.parametrize(
    "data",
    [b"GET\nx\0\n", b"PING\r\n", b"x" * 300 + b"\0\n", b"GET\n" + RECORD_GET],
)
def test_a_nul_after_the_first_line_is_no_legacy_record(data):
    conn, _ = client()
    assert type_(conn, data) in (READ, PAUSE)
    assert not conn.misdirected and conn.head is None


def test_the_legacy_port_is_not_sniffed():
    conn, effects = client(dialect=LEGACY)
    assert type_(conn, RECORD_GET) == READ
    assert effects.take() == [m.Get(5, False, 1)]
    assert not conn.misdirected
