"""workers.connection.Connection: what a client's lines ask of the matchmaker, in both dialects.

No sockets: lines go straight into the connection, what it asks lands in its
recorded effects, what it is told is in its ``out`` buffer.
"""

from __future__ import annotations

import pytest

from ipc import messages as m
from tests.component.test_connection import WORKER, Effects, client, out
from wire.dialects import LEGACY, LINE, Dialect
from wire.errors import ErrorCode
from wire.legacy import record
from wire.replies import Cancelled, Clients, Error, Named, Waiting
from workers.connection import Connection


def say(conn: Connection, text: str) -> None:
    conn.receive(record(text) if conn.dialect is LEGACY else text.encode() + b"\n", now=1.0)
    conn.drain()


@pytest.mark.parametrize("dialect", [LINE, LEGACY], ids=["line", "legacy"])
def test_a_connect_is_stamped_when_it_is_read(dialect: Dialect) -> None:
    """A client given the id after this moment is not the one the request names."""
    conn, effects = client(key=7, cid=1, dialect=dialect)
    say(conn, "CONNECT 2")
    assert effects.take() == [m.Connect(1, 2, 7, asked=1001)]


# ---- a CONNECT that crossed the partner's ------------------------------------------------


def paired(a: Connection, b: Connection, requested_by_a: bool = True) -> None:
    """``a``'s CONNECT paired ``a`` and ``b``, both on this worker (target told first)."""
    b.paired(m.Paired(b.key, 1, a.cid, WORKER, a.key, not requested_by_a), a)
    a.paired(m.Paired(a.key, 1, b.cid, WORKER, b.key, requested_by_a), b)
    out(a), out(b)


def pair(dialect: Dialect = LINE) -> tuple[Connection, Connection, Effects]:
    (a, _), (b, effects) = client(key=1, cid=1), client(key=2, cid=2, dialect=dialect)
    paired(a, b)
    return a, b, effects


@pytest.mark.parametrize(
    ("dialect", "talking"),
    [(LINE, b"ERROR TALKING 1\n"), (LEGACY, record("CONNECT TALK"))],
    ids=["line", "legacy"],
)
def test_the_asked_ends_first_line_connect_to_its_partner_is_answered_talking(
    dialect: Dialect, talking: bytes
) -> None:
    a, b, effects = pair(dialect)
    say(b, "CONNECT 1")  # sent before b read its CONNECTED
    assert out(b) == talking
    assert out(a) == b""  # not chat
    assert effects.take() == []
    say(b, "CONNECT 1")  # a second one is chat, as any later line
    assert out(a) == b"MSG CONNECT 1\n"
    assert out(b) == b""


@pytest.mark.parametrize("line", ["connect 1", "  CONNECT   1 "])
def test_the_crossed_connect_is_read_as_a_command_would_be(line: str) -> None:
    a, b, _ = pair()
    say(b, line)
    assert out(b) == b"ERROR TALKING 1\n"
    assert out(a) == b""


@pytest.mark.parametrize("first", ["CONNECT 3", "GET", "PING", "CONNECT x", "hello", "CONNECT"])
def test_any_other_first_line_is_chat(first: str) -> None:
    a, b, _ = pair()
    say(b, first)
    say(b, "CONNECT 1")  # not the first line any more
    assert out(a) == f"MSG {first}\nMSG CONNECT 1\n".encode()
    assert out(b) == b""


def test_the_requesters_connect_after_its_own_is_chat() -> None:
    """``a`` asked: a line it sent after its CONNECT is a message, whatever it says."""
    a, b, _ = pair()
    say(a, "CONNECT 2")
    assert out(b) == b"MSG CONNECT 2\n"
    assert out(a) == b""


def test_a_client_paired_while_its_own_request_waited_gets_chat() -> None:
    """Its lines after that request were read after the pairing, never before it: the
    matchmaker answers the request, and the next line is chat."""
    (a, _), (b, _) = client(key=1, cid=1), client(key=2, cid=2)
    say(b, "GET")
    assert b.request is not None
    paired(a, b)
    assert b.answer(Clients(((1, 1, ""), (2, 1, ""))))
    b.drain()
    say(b, "CONNECT 1")
    assert out(a) == b"MSG CONNECT 1\n"
    assert out(b) == b"CLIENTS 1=BUSY 2=BUSY\n"


# ---- MATCH, CANCEL and NAME ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", [LINE, LEGACY], ids=["line", "legacy"])
def test_match_and_cancel_ask_the_matchmaker_and_the_worker_keeps_the_line_state(
    dialect: Dialect,
) -> None:
    """The worker remembers it waits, and since when, for a new matchmaker's hello."""
    conn, effects = client(key=7, cid=1, dialect=dialect)
    say(conn, "MATCH NEW")
    assert effects.take() == [m.Match(1, 7, asked=1001, new=True)]
    assert conn.answer(Waiting())
    assert out(conn) == dialect.render(Waiting())
    state, _ = conn.hello_state()
    assert state is not None and (state.waiting, state.new) == (1001, True)
    say(conn, "CANCEL")
    assert effects.take() == [m.Cancel(1, 7)]
    assert conn.answer(Cancelled())
    state, _ = conn.hello_state()
    assert state is not None and state.waiting is None


def test_a_waiting_client_paired_by_someone_else_waits_no_more() -> None:
    conn, effects = client(key=7, cid=1)
    say(conn, "MATCH")
    conn.answer(Waiting())
    conn.paired(m.Paired(7, 4, 2, WORKER + 1, 9, False), None)
    assert out(conn) == b"WAITING\nCONNECTED 2\n"
    state, _ = conn.hello_state()
    assert state is not None and state.waiting is None and state.session == 4


@pytest.mark.parametrize("line", ["MATCH", "match new", "CANCEL"])
def test_a_match_or_cancel_that_crossed_the_pairing_is_answered_talking(line: str) -> None:
    """``b`` waited; ``a``'s MATCH paired it just as ``b`` sent one of these."""
    a, b, _ = pair()
    say(b, line)
    assert out(b) == b"ERROR TALKING 1\n"
    assert out(a) == b""
    say(b, line)  # not the first line any more: chat
    assert out(a) == f"MSG {line}\n".encode()


def test_name_asks_the_matchmaker_and_the_worker_keeps_the_name() -> None:
    conn, effects = client(key=7, cid=1)
    say(conn, "NAME Ann")
    assert effects.take() == [m.Name(1, 7, "Ann")]
    assert conn.answer(Named("Ann"))
    assert out(conn) == b"NAMED Ann\n"
    state, _ = conn.hello_state()
    assert state is not None and state.name == "Ann"
    say(conn, "NAME bo")
    assert conn.answer(Error(ErrorCode.NAME_TAKEN, "bo"))
    assert conn.hello_state()[0].name == "Ann"  # type: ignore[union-attr]
    say(conn, "NAME")
    assert effects.take()[-1] == m.Name(1, 7, "")
    assert conn.answer(Named())
    assert conn.hello_state()[0].name == ""  # type: ignore[union-attr]


def test_connect_by_name_is_stamped_too() -> None:
    conn, effects = client(key=7, cid=1)
    say(conn, "CONNECT ann")
    assert effects.take() == [m.Connect(1, 0, 7, asked=1001, name="ann")]


@pytest.mark.parametrize("line", ["NAME ann", "NAME", "CONNECT ann"])
def test_a_legacy_client_has_no_names(line: str) -> None:
    """The original client is unchanged: what it never had is an invalid command."""
    conn, effects = client(key=7, cid=1, dialect=LEGACY)
    say(conn, line)
    assert effects.take() == []
    assert out(conn) == record("INVALID COMMAND")
    assert conn.request is None
