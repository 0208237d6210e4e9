"""wire.commands: every verb parsed while FREE, control lines while BUSY, and HELP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.commands import (
    CLOSE,
    GOODBYE,
    SESSION_HELP,
    VERBS,
    Cancel,
    Close,
    Connect,
    Get,
    Goodbye,
    Help,
    Match,
    Message,
    Name,
    Ping,
    help_lines,
    name_key,
    parse_busy,
    parse_free,
    valid_name,
)
from wire.errors import ErrorCode, ProtocolError


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("GET", Get(False)),
        ("get", Get(False)),
        ("Get", Get(False)),
        (" GET ", Get(False)),
        ("\tGET\t", Get(False)),
        ("GET FREE", Get(True)),
        ("get free", Get(True)),
        ("GeT fReE", Get(True)),
        ("  GET   FREE  ", Get(True)),
        ("CONNECT 3", Connect(3)),
        ("connect 007", Connect(7)),
        ("  Connect\t12  ", Connect(12)),
        ("CONNECT 999999999999999999", Connect(999_999_999_999_999_999)),
        ("PING", Ping()),
        ("ping", Ping()),
        (" PING ", Ping()),
        ("HELP", Help()),
        ("help", Help()),
        ("#CLOSE#", Close()),
        ("#close#", Close()),
        (" #CLOSE# ", Close()),
    ],
)
def test_parse_free_commands(line, command):
    assert parse_free(line) == command


@pytest.mark.parametrize("line", ["", " ", "   ", "\t", " \t  "])
def test_parse_free_blank_line_is_ignored(line):
    assert parse_free(line) is None


def refused(line):
    with pytest.raises(ProtocolError) as info:
        parse_free(line)
    return info.value


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("GET x", "ERROR USAGE GET [FREE]"),
        ("GET FREE x", "ERROR USAGE GET [FREE]"),
        ("GET FREEDOM", "ERROR USAGE GET [FREE]"),
        ("GET BUSY", "ERROR USAGE GET [FREE]"),
        ("CONNECT", "ERROR USAGE CONNECT <id>"),
        ("connect", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 0", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 000", "ERROR USAGE CONNECT <id>"),
        ("CONNECT +1", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 1 2", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 1.0", "ERROR USAGE CONNECT <id>"),
        ("CONNECT \uff13", "ERROR USAGE CONNECT <id>"),  # fullwidth digit three
        ("CONNECT \u0663", "ERROR USAGE CONNECT <id>"),  # arabic-indic digit three
        ("CONNECT \u00b2", "ERROR USAGE CONNECT <id>"),  # superscript two: isdigit() is True
        ("CONNECT 1234567890123456789", "ERROR USAGE CONNECT <id>"),  # 19 digits
        ("CONNECT a!", "ERROR USAGE CONNECT <id>"),  # neither an id nor a name
        ("CONNECT " + "a" * 25, "ERROR USAGE CONNECT <id>"),  # a name too long
        ("CONNECT \u00e9t\u00e9", "ERROR USAGE CONNECT <id>"),  # letters, but not ASCII
        ("MATCH x", "ERROR USAGE MATCH [NEW]"),
        ("MATCH NEW NEW", "ERROR USAGE MATCH [NEW]"),
        ("CANCEL x", "ERROR USAGE CANCEL"),
        ("NAME 42", "ERROR USAGE NAME [<name>]"),  # all digits: that is an id
        ("NAME a b", "ERROR USAGE NAME [<name>]"),
        ("NAME a.b", "ERROR USAGE NAME [<name>]"),
        ("NAME " + "a" * 25, "ERROR USAGE NAME [<name>]"),
        ("NAME \u00c5sa", "ERROR USAGE NAME [<name>]"),
        ("PING x", "ERROR USAGE PING"),
        ("ping PING", "ERROR USAGE PING"),
        ("HELP me", "ERROR USAGE HELP"),
        ("#CLOSE# now", "ERROR USAGE #CLOSE#"),
    ],
)
def test_parse_free_usage_errors(line, reply):
    error = refused(line)
    assert error.code is ErrorCode.USAGE
    assert error.line() == reply


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("CONNECT ann", Connect(0, "ann")),
        ("connect Ann-2_x", Connect(0, "Ann-2_x")),
        ("CONNECT -1", Connect(0, "-1")),  # not all digits: a name, not an id
        ("CONNECT 0x5", Connect(0, "0x5")),
        ("CONNECT " + "z" * 24, Connect(0, "z" * 24)),
        ("MATCH", Match(False)),
        ("match new", Match(True)),
        (" MATCH  NEW ", Match(True)),
        ("CANCEL", Cancel()),
        ("cancel", Cancel()),
        ("NAME ann", Name("ann")),
        ("name A1", Name("A1")),
        ("NAME", Name("")),
        ("NAME _", Name("_")),
    ],
)
def test_parse_free_match_cancel_name_and_connect_by_name(line, command):
    assert parse_free(line) == command


@pytest.mark.parametrize(
    ("word", "valid"),
    [("a", True), ("A-b_9", True), ("12a", True), ("12", False), ("", False),
     ("a" * 24, True), ("a" * 25, False), ("a b", False), ("a=b", False), ("\u00e5", False)],
)  # fmt: skip
def test_valid_name(word, valid):
    assert valid_name(word) is valid


def test_names_compare_without_regard_to_case():
    assert name_key("Ann") == name_key("aNN") != name_key("anna")


def test_usage_detail_is_the_verbs_syntax():
    assert refused("GET x").detail == "GET [FREE]" == VERBS["GET"].syntax
    assert refused("CONNECT").detail == "CONNECT <id>" == VERBS["CONNECT"].syntax


@pytest.mark.parametrize("line", ["#GOODBYE#", "#goodbye#", " #GOODBYE# ", "#GOODBYE# x"])
def test_goodbye_while_free_is_not_in_chat(line):
    error = refused(line)
    assert error.code is ErrorCode.NOT_IN_CHAT
    assert error.detail == ""
    assert error.line() == "ERROR NOT_IN_CHAT"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("foo bar", "ERROR UNKNOWN_COMMAND foo"),
        ("foo", "ERROR UNKNOWN_COMMAND foo"),
        ("  Foo  bar ", "ERROR UNKNOWN_COMMAND Foo"),  # the word as sent, not upper-cased
        ("hello world", "ERROR UNKNOWN_COMMAND hello"),
        ("GETFREE", "ERROR UNKNOWN_COMMAND GETFREE"),
        ("CONNECT3", "ERROR UNKNOWN_COMMAND CONNECT3"),
        ("#BYE#", "ERROR UNKNOWN_COMMAND #BYE#"),
        ("MSG hi", "ERROR UNKNOWN_COMMAND MSG"),
        ("y" * 65 + " z", "ERROR UNKNOWN_COMMAND " + "y" * 64),  # echoed at most 64 long
        ("\u00e9t\u00e9 x", "ERROR UNKNOWN_COMMAND \u00e9t\u00e9"),
    ],
)
def test_unknown_command_names_the_first_word(line, reply):
    error = refused(line)
    assert error.code is ErrorCode.UNKNOWN_COMMAND
    assert error.line() == reply


@given(st.integers(1, 10**18 - 1), st.sampled_from(["CONNECT", "connect", "Connect"]))
def test_connect_takes_any_positive_decimal_id(target, verb):
    assert parse_free(f"{verb} {target}") == Connect(target)
    assert parse_free(f"  {verb}\t{target}  ") == Connect(target)


@given(st.integers(1, 10**17))
def test_connect_accepts_leading_zeros_within_18_digits(target):
    word = f"{target:018d}"
    assert parse_free(f"CONNECT {word}") == Connect(target)


@given(st.text())
def test_parse_free_never_raises_anything_but_protocol_error(line):
    try:
        result = parse_free(line)
    except ProtocolError as error:
        assert error.code in (ErrorCode.USAGE, ErrorCode.UNKNOWN_COMMAND, ErrorCode.NOT_IN_CHAT)
        assert error.line().startswith(f"ERROR {error.code.value}")
    else:
        kinds = (Get, Connect, Match, Cancel, Name, Ping, Help, Close)
        assert result is None or isinstance(result, kinds)
        if result is None:
            assert line.split() == []


# ---- while BUSY --------------------------------------------------------------------


def test_busy_control_lines_are_exact():
    assert GOODBYE == "#GOODBYE#"
    assert CLOSE == "#CLOSE#"
    assert parse_busy("#GOODBYE#") == Goodbye()
    assert parse_busy("#CLOSE#") == Close()


@pytest.mark.parametrize(
    "line",
    [
        " #GOODBYE#",
        "#GOODBYE# ",
        "#goodbye#",
        "#close#",
        " #CLOSE#",
        "#CLOSE#\r",
        "GET",
        "CONNECT 2",
        "PING",
        "HELP",
        "",
        "   ",
        "#GOODBYE#x",
    ],
)
def test_busy_everything_else_is_a_message_unchanged(line):
    assert parse_busy(line) == Message(line)


@given(st.text())
def test_busy_any_text_is_a_message_unless_a_control_line(line):
    result = parse_busy(line)
    if line == GOODBYE:
        assert result == Goodbye()
    elif line == CLOSE:
        assert result == Close()
    else:
        assert result == Message(line)
        assert result.text is line


# ---- HELP -------------------------------------------------------------------------


def test_verbs_table():
    assert list(VERBS) == [
        "GET",
        "CONNECT",
        "MATCH",
        "CANCEL",
        "NAME",
        "PING",
        "HELP",
        "#CLOSE#",
        "#GOODBYE#",
    ]
    assert [v.syntax for v in VERBS.values()] == [
        "GET [FREE]",
        "CONNECT <id>",
        "MATCH [NEW]",
        "CANCEL",
        "NAME [<name>]",
        "PING",
        "HELP",
        "#CLOSE#",
        "#GOODBYE#",
    ]


def test_help_lines_one_per_verb_then_the_session_line():
    lines = help_lines()
    assert len(lines) == len(VERBS) + 1
    assert all(line.startswith("HELP ") for line in lines)
    width = max(len(v.syntax) for v in VERBS.values())
    for line, verb in zip(lines, VERBS.values(), strict=False):
        assert line == f"HELP {verb.syntax.ljust(width)}  {verb.summary}"
    assert lines[-1] == f"HELP {SESSION_HELP}"


def test_help_lines_exact_text():
    assert help_lines() == [
        "HELP GET [FREE]     list connected clients (FREE: only those free to chat)",
        "HELP CONNECT <id>   start a one-to-one session with a FREE client (or <name>)",
        "HELP MATCH [NEW]    pair with whoever has waited longest, or wait for the next"
        " (NEW: not your last partner)",
        "HELP CANCEL         leave the line MATCH put you in",
        "HELP NAME [<name>]  take a name others can CONNECT to (none: drop yours)",
        "HELP PING           check that the server answers (PONG)",
        "HELP HELP           show this list",
        "HELP #CLOSE#        disconnect (BYE)",
        "HELP #GOODBYE#      in a session: end it; both of you stay connected and FREE",
        "HELP in a session every other line goes to your partner as MSG <line>",
    ]


def test_help_lines_have_no_line_breaks():
    assert not any("\n" in line or "\r" in line for line in help_lines())


def test_commands_are_frozen_values():
    assert Connect(3) == Connect(3)
    assert Connect(3) != Connect(4)
    assert hash(Get(True)) == hash(Get(True))
    with pytest.raises(AttributeError):
        Connect(3).target = 4  # type: ignore[misc]
