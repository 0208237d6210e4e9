"""client.aliases: what the user types becomes the right wire line, or nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.aliases import (
    ALIASES,
    Refuse,
    Send,
    ShowHelp,
    completions,
    help_lines,
    split_lines,
    translate,
)
from wire.commands import parse_free
from wire.errors import ErrorCode, ProtocolError


@pytest.mark.parametrize(
    ("typed", "wire"),
    [
        ("/list", "GET"),
        ("/LIST", "GET"),
        ("/free", "GET FREE"),
        ("/connect 3", "CONNECT 3"),
        ("/connect   12  ", "CONNECT 12"),
        ("/ping", "PING"),
        ("/bye", "#GOODBYE#"),
        ("/quit", "#CLOSE#"),
        ("GET", "GET"),
        ("get free", "get free"),
        ("CONNECT 3", "CONNECT 3"),
        ("#GOODBYE#", "#GOODBYE#"),
        ("#CLOSE#", "#CLOSE#"),
        ("hello there", "hello there"),
        ("", ""),
        ("  /list", "  /list"),  # only a leading "/" makes an alias
        ("//list", "/list"),
        ("//", "/"),
        ("///x", "//x"),
    ],
)
def test_free_lines_map_to_wire_lines(typed: str, wire: str) -> None:
    assert translate(typed, busy=False) == Send(wire)


@pytest.mark.parametrize(
    ("typed", "wire"),
    [
        ("/bye", "#GOODBYE#"),
        ("/quit", "#CLOSE#"),
        ("hello", "hello"),
        ("GET", "GET"),  # protocol words in a session are messages, as the server says
        ("//list", "/list"),
        ("//help me", "/help me"),
    ],
)
def test_busy_lines_map_to_wire_lines(typed: str, wire: str) -> None:
    assert translate(typed, busy=True) == Send(wire)


def test_help_sends_help_when_free_and_only_shows_aliases_in_a_session() -> None:
    assert translate("/help", busy=False) == ShowHelp("HELP")
    assert translate("/help", busy=True) == ShowHelp(None)


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("/nope", "/nope is not a command here; /help lists them, //text sends /text"),
        ("/", "/ is not a command here; /help lists them, //text sends /text"),
        ("/ list", "/ is not a command here; /help lists them, //text sends /text"),
        ("/connect", "usage: /connect <id>"),
        ("/connect 1 2", "usage: /connect <id>"),
        # neither an id nor a name, as the server's parser says (it would answer ERROR USAGE)
        ("/connect x!", "usage: /connect <id>"),
        ("/connect " + "n" * 25, "usage: /connect <id>"),
        ("/connect 0", "usage: /connect <id>"),
        ("/connect +5", "usage: /connect <id>"),
        ("/connect 1.5", "usage: /connect <id>"),
        ("/list all", "usage: /list"),
        ("/quit now", "usage: /quit"),
    ],
)
def test_bad_aliases_are_refused_locally(typed: str, reason: str) -> None:
    assert translate(typed, busy=False) == Refuse(reason)


@pytest.mark.parametrize("typed", ["/list", "/free", "/connect 3", "/ping"])
def test_free_only_aliases_are_refused_in_a_session(typed: str) -> None:
    word = typed.split()[0]
    assert translate(typed, busy=True) == Refuse(
        f"{word} works only outside a session (in one, every line goes to your partner); "
        "/bye ends the session"
    )


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", [""]),
        ("one", ["one"]),
        ("one\ntwo", ["one", "two"]),
        ("one\r\ntwo\r", ["one", "two"]),
        ("a\rb", ["a\rb"]),  # a "\r" inside a line is content, as for the server
    ],
)
def test_split_lines_cuts_where_the_server_would(text: str, lines: list[str]) -> None:
    assert split_lines(text) == lines


def test_help_lines_name_every_alias() -> None:
    text = "\n".join(help_lines())
    for alias in ALIASES.values():
        assert alias.syntax in text


@given(st.text(), st.booleans())
def test_no_wire_line_holds_a_line_break(text: str, busy: bool) -> None:
    for line in split_lines(text):
        action = translate(line, busy=busy)
        if isinstance(action, Send):
            assert "\n" not in action.line
            assert not action.line.endswith("\r")
        if isinstance(action, ShowHelp) and action.send is not None:
            assert "\n" not in action.send


@given(st.text().filter(lambda s: "\n" not in s and not s.startswith("/")), st.booleans())
def test_plain_text_goes_out_unchanged(line: str, busy: bool) -> None:
    assert translate(line, busy=busy) == Send(line)


@given(st.text().filter(lambda s: "\n" not in s), st.booleans())
def test_double_slash_sends_one_slash(rest: str, busy: bool) -> None:
    assert translate("//" + rest, busy=busy) == Send("/" + rest)


@pytest.mark.parametrize(
    ("typed", "wire"),
    [
        ("/match", "MATCH"),
        ("/match new", "MATCH new"),
        ("/MATCH NEW", "MATCH NEW"),
        ("/cancel", "CANCEL"),
        ("/name ann", "NAME ann"),
        ("/name", "NAME"),
        ("/connect ann", "CONNECT ann"),
    ],
)
def test_match_cancel_and_name_aliases(typed: str, wire: str) -> None:
    assert translate(typed, busy=False) == Send(wire)


@pytest.mark.parametrize("typed", ["/match", "/cancel", "/name ann", "/name"])
def test_match_cancel_and_name_are_refused_in_a_session(typed: str) -> None:
    assert isinstance(translate(typed, busy=True), Refuse)


def test_optional_argument_aliases_take_at_most_one_word() -> None:
    assert translate("/name a b", busy=False) == Refuse("usage: /name [<name>]")
    assert translate("/cancel now", busy=False) == Refuse("usage: /cancel")


KNOWN = {1: "", 2: "ann", 12: "Bo", 20: "annie"}


@pytest.mark.parametrize(
    ("before", "offered"),
    [
        ("/connect ", ["1", "2", "12", "20", "ann", "annie", "Bo"]),
        ("/connect 1", ["1", "12"]),
        ("/connect AN", ["ann", "annie"]),
        ("/CONNECT b", ["Bo"]),
        ("/connect  2", ["2", "20"]),
        ("/connect", []),  # no space yet: the alias itself is being typed
        ("/connect 1 2", []),  # one argument only
        ("/list ", []),
        ("CONNECT ", []),
        ("hello /connect ", []),
    ],
)
def test_tab_completes_ids_and_names_after_connect_only(before: str, offered: list[str]) -> None:
    assert completions(before, KNOWN) == offered


@given(st.sampled_from(sorted(ALIASES)), st.text().filter(lambda s: "\n" not in s))
def test_an_alias_never_sends_what_the_server_would_refuse_as_usage(word: str, rest: str) -> None:
    """``/connect x`` went out as ``CONNECT x`` and came back ``ERROR USAGE``, though an
    alias with wrong arguments is refused here and nothing is sent."""
    action = translate(f"/{word} {rest}", busy=False)
    line = action.line if isinstance(action, Send) else getattr(action, "send", None)
    if line is None:
        return
    try:
        parse_free(line)
    except ProtocolError as exc:
        assert exc.code is not ErrorCode.USAGE, line
