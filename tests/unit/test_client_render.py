"""client.render: every server line reads as a sentence, one line per server line."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.render import (
    Output,
    Tone,
    error_sentence,
    paint,
    render,
    visible,
)
from wire import replies
from wire.errors import ErrorCode

NOON = datetime.time(12, 34, 56)


def show(
    line: str, *, me: int | None = 7, partner: int | None = 3, table: bool = False
) -> list[tuple[Tone, str]]:
    """Render one wire line as (tone, text) pairs."""
    outputs = render(replies.parse_reply(line), me=me, partner=partner, when=NOON, table=table)
    return [(out.tone, out.text) for out in outputs]


@pytest.mark.parametrize(
    ("line", "tone", "text"),
    [
        ("WELCOME 7", Tone.NOTICE, "welcome: you are client 7"),
        ("CONNECTED 3", Tone.NOTICE, "connected: in a session with client 3; /bye ends it"),
        ("MSG hello there", Tone.PARTNER, "[12:34:56] 3: hello there"),
        ("MSG ", Tone.PARTNER, "[12:34:56] 3: "),
        ("MSG  two  spaces ", Tone.PARTNER, "[12:34:56] 3:  two  spaces "),
        ("ENDED 3", Tone.NOTICE, "ended: the session with client 3 is over; you are free"),
        ("BYE", Tone.NOTICE, "bye: disconnected"),
        ("OUTAGE", Tone.ALERT, "outage: the server is shutting down"),
        ("PONG", Tone.INFO, "pong"),
        ("HELP GET [FREE]  list clients", Tone.INFO, "help: GET [FREE]  list clients"),
        ("CLIENTS", Tone.INFO, "clients: none"),
        ("CLIENTS 1=FREE 3=BUSY 7=BUSY", Tone.INFO, "clients: 1 free, 3 busy, 7 busy (you)"),
        ("HELLO world", Tone.INFO, "server: HELLO world"),
        ("WELCOME x", Tone.INFO, "server: WELCOME x"),
        ("", Tone.INFO, "server: "),
    ],
)
def test_each_server_line_renders_as_one_line(line: str, tone: Tone, text: str) -> None:
    assert show(line) == [(tone, text)]


def test_a_message_before_any_session_shows_an_unknown_sender() -> None:
    assert show("MSG hi", partner=None) == [(Tone.PARTNER, "[12:34:56] ?: hi")]


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("ERROR OFFLINE 5", "no client has id 5; /list shows who is connected"),
        ("ERROR SELF", "that is your own id (7); pick someone else from /list"),
        ("ERROR BUSY 5", "client 5 is already in a session; /free shows who is free to chat"),
        ("ERROR TALKING 5", "you are already in a session with client 5; just type to talk"),
        ("ERROR USAGE CONNECT <id>", "wrong arguments; usage: CONNECT <id>"),
        (
            "ERROR UNKNOWN_COMMAND hello",
            "'hello' is not a command; /help lists them, /connect <id> starts a chat",
        ),
        ("ERROR NOT_IN_CHAT", "you are not in a session; /connect <id> starts one"),
        (
            "ERROR TOO_LONG",
            "that line was too long for the server and was dropped; send it in parts",
        ),
        ("ERROR ENCODING", "the server could not read that line as UTF-8 and dropped it"),
        ("ERROR FULL", "the server is full; try again later"),
        (
            "ERROR TOO_MANY",
            "the server takes no more connections from your address just now; try later",
        ),
        ("ERROR SLOW_CONSUMER", "the server dropped this client for reading too slowly"),
        ("ERROR IDLE", "the server closed this idle connection; reconnect to go on"),
    ],
)
def test_each_error_code_renders_as_a_sentence(line: str, sentence: str) -> None:
    assert show(line) == [(Tone.ERROR, f"error: {sentence}")]


def test_the_error_table_above_covers_every_code() -> None:
    for code in ErrorCode:
        sentence = error_sentence(replies.Error(code, "5"), 7)
        assert not sentence.startswith(code.value), code


@pytest.mark.parametrize(
    ("line", "sentence"),
    [
        ("ERROR OFFLINE", "no client has id that client; /list shows who is connected"),
        ("ERROR USAGE", "wrong arguments"),
        (
            "ERROR UNKNOWN_COMMAND",
            "that is not a command; /help lists them, /connect <id> starts a chat",
        ),
    ],
)
def test_errors_without_detail_still_read(line: str, sentence: str) -> None:
    assert show(line, me=None) == [(Tone.ERROR, f"error: {sentence}")]


def test_self_without_a_known_id() -> None:
    assert show("ERROR SELF", me=None) == [
        (Tone.ERROR, "error: that is your own id; pick someone else from /list")
    ]


def test_clients_table_marks_your_own_row() -> None:
    assert show("CLIENTS 1=FREE 7=BUSY 120=FREE", table=True) == [
        (Tone.INFO, " id  status"),
        (Tone.INFO, "  1  FREE"),
        (Tone.INFO, "  7  BUSY  (you)"),
        (Tone.INFO, "120  FREE"),
    ]


def test_clients_table_of_nobody() -> None:
    assert show("CLIENTS", table=True) == [(Tone.INFO, "no clients to list")]


def test_table_flag_changes_only_clients() -> None:
    assert show("PONG", table=True) == show("PONG")


def test_control_characters_from_the_partner_are_made_visible() -> None:
    assert show("MSG \x1b[2Jgotcha\x07\r") == [
        (Tone.PARTNER, "[12:34:56] 3: \\x1b[2Jgotcha\\x07\\x0d")
    ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain", "plain"),
        ("tab\there", "tab\\x09here"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        (
            "emoji \U0001f468\u200d\U0001f469 nbsp\u00a0",
            "emoji \U0001f468\u200d\U0001f469 nbsp\u00a0",
        ),
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


@pytest.mark.parametrize(
    ("tone", "painted"),
    [
        (Tone.NOTICE, "\x1b[36mx\x1b[0m"),
        (Tone.PARTNER, "\x1b[32mx\x1b[0m"),
        (Tone.ERROR, "\x1b[31mx\x1b[0m"),
        (Tone.ALERT, "\x1b[1;33mx\x1b[0m"),
        (Tone.INFO, "x"),
    ],
)
def test_paint(tone: Tone, painted: str) -> None:
    assert paint(Output(tone, "x"), color=True) == painted
    assert paint(Output(tone, "x"), color=False) == "x"


@given(
    st.text(),
    st.none() | st.integers(1, 10**6),
    st.none() | st.integers(1, 10**6),
    st.booleans(),
)
def test_render_never_raises_and_never_breaks_a_line(
    line: str, me: int | None, partner: int | None, table: bool
) -> None:
    """Whatever the server sends, the user sees lines without control characters."""
    reply = replies.parse_reply(line)
    outputs = render(reply, me=me, partner=partner, when=NOON, table=table)
    assert outputs
    for out in outputs:
        assert "\n" not in out.text and "\r" not in out.text and "\x1b" not in out.text
    if not table or not isinstance(reply, replies.Clients):
        assert len(outputs) == 1


NAMES = st.one_of(st.just(""), st.from_regex(r"[A-Za-z_-][A-Za-z0-9_-]{0,23}", fullmatch=True))


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 2), NAMES), max_size=30))
def test_every_clients_line_renders(entries: list[tuple[int, int, str]]) -> None:
    unique = {cid: (status, name) for cid, status, name in entries}
    listed = [(cid, status, name) for cid, (status, name) in sorted(unique.items())]
    line = replies.clients_line(listed)
    assert replies.parse_reply(line) == replies.Clients(tuple(listed))
    assert len(show(line, table=True)) == max(1, len(unique) + 1)
    (only,) = show(line)
    assert only[1].startswith("clients: ")


@pytest.mark.parametrize(
    ("line", "tone", "text"),
    [
        ("WAITING", Tone.NOTICE, "waiting: you are next in line for a partner; /cancel leaves"),
        ("CANCELLED", Tone.NOTICE, "cancelled: you left the line; you are free"),
        ("NAMED ann", Tone.NOTICE, "named: others see you as ann"),
        ("NAMED", Tone.NOTICE, "named: you have no name now"),
        ("ERROR WAITING", Tone.ERROR,
         "error: you are waiting for a partner already; /cancel leaves the line"),
        ("ERROR NOT_WAITING", Tone.ERROR,
         "error: you are not waiting for a partner; /match finds one"),
        ("ERROR OFFLINE bo", Tone.ERROR,
         "error: no client is called bo; /list shows who is connected"),
        ("CLIENTS 1=FREE=bo 3=WAITING 7=BUSY=ann", Tone.INFO,
         "clients: 1 bo free, 3 waiting, 7 ann busy (you)"),
    ],
)  # fmt: skip
def test_match_and_name_lines(line: str, tone: Tone, text: str) -> None:
    assert show(line) == [(tone, text)]


def test_clients_table_has_a_name_column_when_anyone_is_named() -> None:
    assert show("CLIENTS 1=FREE=bo 7=WAITING 12=BUSY=annabel", table=True) == [
        (Tone.INFO, "id  name     status"),
        (Tone.INFO, " 1  bo       FREE"),
        (Tone.INFO, " 7           WAITING  (you)"),
        (Tone.INFO, "12  annabel  BUSY"),
    ]
