"""client.session: the view follows the server's lines, and says how it all ended."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.aliases import Send, help_lines
from client.render import Output, Tone
from client.session import ClientSession, Outcome
from wire import replies
from wire.errors import ErrorCode

NOON = datetime.time(12, 0, 0)


def feed(session: ClientSession, *lines: str) -> list[str]:
    """Give the session wire lines; return the texts it shows."""
    shown: list[str] = []
    for line in lines:
        shown.extend(out.text for out in session.receive(replies.parse_reply(line), NOON))
    return shown


def test_prompt_follows_welcome_connected_and_ended() -> None:
    session = ClientSession()
    assert session.prompt() == "[connecting]> "
    feed(session, "WELCOME 7")
    assert (session.me, session.partner, session.busy) == (7, None, False)
    assert session.prompt() == "[7 FREE]> "
    feed(session, "CONNECTED 3")
    assert session.busy
    assert session.prompt() == "[7 -> 3]> "
    assert feed(session, "MSG hi", "ENDED 3") == [
        "[12:00:00] 3: hi",
        "ended: the session with client 3 is over; you are free",
    ]
    assert session.prompt() == "[7 FREE]> "
    assert session.outcome is Outcome.RUNNING


def test_ended_for_another_peer_keeps_the_session() -> None:
    """An ENDED that names someone else cannot end this session (the server never sends one)."""
    session = ClientSession()
    feed(session, "WELCOME 7", "CONNECTED 3")
    assert feed(session, "ENDED 4") == ["ended: the session with client 4 is over; you are free"]
    assert session.partner == 3


def test_bye_closes_with_exit_code_zero() -> None:
    session = ClientSession()
    assert feed(session, "WELCOME 1", "CONNECTED 2", "BYE") == [
        "welcome: you are client 1",
        "connected: in a session with client 2; /bye ends it",
        "bye: disconnected",
    ]
    assert session.outcome is Outcome.CLOSED and session.outcome.exit_code == 0
    assert not session.running and not session.busy
    assert session.prompt() == "[closed]> "


def test_outage_ends_with_exit_code_three_and_eof_does_not_change_it() -> None:
    session = ClientSession()
    assert feed(session, "WELCOME 1", "OUTAGE") == [
        "welcome: you are client 1",
        "outage: the server is shutting down",
    ]
    session.connection_lost()
    assert session.outcome is Outcome.OUTAGE and session.outcome.exit_code == 3


def test_eof_without_bye_is_lost() -> None:
    session = ClientSession()
    feed(session, "WELCOME 1")
    session.connection_lost()
    assert session.outcome is Outcome.LOST and session.outcome.exit_code == 3


def test_full_before_welcome_is_refused() -> None:
    session = ClientSession()
    assert feed(session, "ERROR FULL") == ["error: the server is full; try again later"]
    assert session.outcome is Outcome.REFUSED and session.outcome.exit_code == 1


def test_too_many_before_welcome_is_refused() -> None:
    session = ClientSession()
    feed(session, "ERROR TOO_MANY")
    assert session.outcome is Outcome.REFUSED


def test_other_errors_change_nothing() -> None:
    session = ClientSession()
    feed(session, "WELCOME 1", "ERROR FULL", "ERROR OFFLINE 9", "ERROR SLOW_CONSUMER")
    assert session.outcome is Outcome.RUNNING
    assert session.prompt() == "[1 FREE]> "


def test_own_row_is_marked_in_table_mode() -> None:
    session = ClientSession(table=True)
    assert feed(session, "WELCOME 2", "CLIENTS 1=BUSY 2=FREE") == [
        "welcome: you are client 2",
        "id  status",
        " 1  BUSY",
        " 2  FREE  (you)",
    ]


def test_submit_maps_aliases_by_state() -> None:
    session = ClientSession()
    feed(session, "WELCOME 1")
    assert session.submit("/list") == [Send("GET")]
    assert session.submit("hello") == [Send("hello")]  # the server answers UNKNOWN_COMMAND
    feed(session, "CONNECTED 2")
    assert session.submit("hello") == [Send("hello")]
    refused = session.submit("/list")
    assert len(refused) == 1 and isinstance(refused[0], Output)
    assert refused[0].tone is Tone.ERROR and refused[0].text.startswith("error: /list works only")


def test_help_shows_aliases_and_asks_the_server_when_free() -> None:
    session = ClientSession()
    local = [Output(Tone.INFO, row) for row in help_lines()]
    assert session.submit("/help") == [*local, Send("HELP")]
    feed(session, "WELCOME 1", "CONNECTED 2")
    assert session.submit("/help") == local


def test_a_paste_becomes_several_lines() -> None:
    session = ClientSession()
    feed(session, "WELCOME 1", "CONNECTED 2")
    assert session.submit("one\r\ntwo\n/bye") == [Send("one"), Send("two"), Send("#GOODBYE#")]


@pytest.mark.parametrize(
    ("lines", "typed", "closes"),
    [
        ([], "#CLOSE#", True),
        ([], "/quit", True),
        ([], "  #close#  ", True),  # commands are case-insensitive while FREE
        ([], "GET", False),
        ([], "CONNECT x", False),
        (["CONNECTED 2"], "#CLOSE#", True),
        (["CONNECTED 2"], "#close#", False),  # a message in a session: only the exact line closes
        (["CONNECTED 2"], "/quit", True),
    ],
)
def test_sent_close_records_a_close_line(lines: list[str], typed: str, closes: bool) -> None:
    session = ClientSession()
    feed(session, "WELCOME 1", *lines)
    session.submit(typed)
    assert session.sent_close is closes


REPLY_LINES = st.sampled_from(
    [
        "WELCOME 1",
        "WELCOME 2",
        "CONNECTED 2",
        "CONNECTED 3",
        "ENDED 2",
        "ENDED 3",
        "MSG x",
        "CLIENTS 1=FREE",
        "BYE",
        "OUTAGE",
        "PONG",
        "HELP x",
        *(f"ERROR {code.value} 2" for code in ErrorCode),
        "junk",
    ]
)


@given(st.lists(REPLY_LINES, max_size=20), st.booleans())
def test_any_reply_sequence_keeps_the_view_consistent(lines: list[str], lost: bool) -> None:
    session = ClientSession()
    for line in lines:
        was = session.outcome
        feed(session, line)
        assert was is Outcome.RUNNING or session.outcome is was  # the first cause wins
        assert session.busy is (session.partner is not None)
        assert session.prompt().endswith("]> ")
    if lost:
        session.connection_lost()
        assert session.outcome is not Outcome.RUNNING
    assert session.outcome.exit_code in (0, 1, 3)


def test_prompt_shows_the_name_and_waiting() -> None:
    session = ClientSession()
    feed(session, "WELCOME 7", "NAMED ann")
    assert session.prompt() == "[7 ann FREE]> "
    assert feed(session, "WAITING") == [
        "waiting: you are next in line for a partner; /cancel leaves"
    ]
    assert session.prompt() == "[7 ann WAITING]> "
    feed(session, "CANCELLED")
    assert session.prompt() == "[7 ann FREE]> "
    feed(session, "WAITING", "CONNECTED 3")
    assert session.prompt() == "[7 ann -> 3]> "
    feed(session, "ENDED 3", "NAMED")
    assert session.prompt() == "[7 FREE]> "


def test_names_from_the_listing_show_beside_ids() -> None:
    session = ClientSession()
    feed(session, "WELCOME 7", "CLIENTS 3=FREE=bo 7=FREE=ann 9=BUSY")
    assert session.names == {3: "bo", 7: "ann", 9: ""}
    assert session.prompt() == "[7 ann FREE]> "
    assert feed(session, "CONNECTED 3", "MSG hi") == [
        "connected: in a session with client 3 bo; /bye ends it",
        "[12:00:00] 3 bo: hi",
    ]
    assert session.prompt() == "[7 ann -> 3 bo]> "
    assert feed(session, "ENDED 3") == ["ended: the session with client 3 is over; you are free"]


def test_a_name_asked_for_is_sent_after_welcome() -> None:
    session = ClientSession(name="ann")
    assert session.take_outbox() == []
    feed(session, "WELCOME 7")
    assert session.take_outbox() == ["NAME ann"]
    assert session.take_outbox() == []
    assert feed(session, "ERROR NAME_TAKEN ann") == [
        "error: the name ann is taken; pick another with /name <name>"
    ]
    assert session.prompt() == "[7 FREE]> "
