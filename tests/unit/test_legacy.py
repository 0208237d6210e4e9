"""wire.legacy and the legacy dialect: records both ways, the original words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.dialects import LEGACY, LINE
from wire.errors import ErrorCode
from wire.legacy import (
    HELP,
    RECORD,
    RecordDecoder,
    get_reply,
    help_records,
    record,
    records,
    sniff,
    wrong_port,
)
from wire.replies import Connected, Error, Pong, Welcome, parse_reply


def rec(text: bytes, pad: bytes = b"") -> bytes:
    raw = text + b"\0" + pad
    return raw + b"\0" * (RECORD - len(raw))


def feed_all(chunks):
    d = RecordDecoder()
    out = []
    for c in chunks:
        out += d.feed(c)
    return out, d


def test_records_whole_split_and_coalesced():
    data = rec(b"GET") + rec(b"CONNECT 3", pad=b"\xff\x01garbage") + rec(b"hi\r\n")
    expected = ["GET", "CONNECT 3", "hi"]
    assert feed_all([data])[0] == expected
    assert feed_all([bytes([b]) for b in data])[0] == expected
    out, d = feed_all([data[:300], data[300:700]])
    assert out == expected[:2] and d.pending == 700 - 512


def test_a_record_without_nul_is_256_bytes_of_text():
    assert feed_all([b"A" * 256])[0] == ["A" * 256]


def test_line_breaks_inside_become_spaces_and_bad_utf8_is_replaced():
    assert feed_all([rec(b"two\nlines\r\nhere\n")])[0] == ["two lines here"]
    assert feed_all([rec(b"caf\xe9")])[0] == ["caf\ufffd"]


@given(st.binary(max_size=2000))
def test_decoder_never_raises_and_keeps_less_than_a_record(data):
    out, d = feed_all([data])
    assert len(out) == len(data) // RECORD
    assert d.pending == len(data) % RECORD
    assert all("\n" not in t and "\r" not in t for t in out)


def test_record_pads_and_cuts_at_a_character_boundary():
    assert record("ABORT") == b"ABORT" + b"\0" * 251
    cut = record("é" * 200)  # 400 bytes of text: cut to 254, never half a character
    assert len(cut) == RECORD and cut[254] == 0 and cut[:254].decode() == "é" * 127


@given(st.text(max_size=1500))
def test_records_split_long_text_and_lose_nothing(text):
    data = records("SEND ", text)
    assert len(data) % RECORD == 0
    parts = [data[i : i + RECORD] for i in range(0, len(data), RECORD)]
    texts = [p[: p.index(b"\0")].decode() for p in parts]
    assert all(t.startswith("SEND ") for t in texts)
    assert "".join(t[5:] for t in texts) == text.replace("\0", " ")


def test_a_nul_in_the_text_cannot_end_it_early():
    assert record("a\0b") == b"a b" + b"\0" * 253


def test_get_reply_by_position_and_cut_to_fit():
    assert get_reply([(1, 0, ""), (3, 1, "ann"), (4, 2, "")]) == "GET -1 0 -1 1 0 "
    assert get_reply([]) == "GET -1 "
    long = get_reply([(i, 0, "") for i in range(1, 500)])
    assert len(long.encode()) <= 255 and long.endswith(" ")


def test_dialects_translate_the_matchmaker_answers():
    legacy = LEGACY
    assert legacy.render(parse_reply("CLIENTS 1=FREE 2=BUSY")) == record("GET -1 0 1 ")
    assert legacy.render(parse_reply("ERROR OFFLINE 9")) == record("CONNECT OFFLINE")
    assert legacy.render(parse_reply("ERROR TALKING 2")) == record("CONNECT TALK")
    assert legacy.render(parse_reply("ERROR FULL")) == record("ABORT")
    assert legacy.render(parse_reply("ENDED 2")) == record("TERMINATED")
    assert legacy.render(parse_reply("BYE")) == record("ABORT")
    assert legacy.render(Connected(3, requested=True)) == record("CONNECT SUCCESS 3")
    assert legacy.render(Connected(3, requested=False)) == record("CONNECT SUCCESS% 3")
    assert legacy.render(Error(ErrorCode.USAGE, "CONNECT <id>")) == record("INVALID COMMAND")
    assert legacy.render(Welcome(4)) == b"" and not legacy.welcomes
    assert LINE.render(parse_reply("ERROR OFFLINE 9")) == b"ERROR OFFLINE 9\n"
    assert LINE.msg("hi") == b"MSG hi\n"
    assert LINE.render(Connected(3, requested=False)) == b"CONNECTED 3\n"


def texts(data):
    assert len(data) % RECORD == 0
    return [data[i : i + RECORD].split(b"\0", 1)[0].decode() for i in range(0, len(data), RECORD)]


def test_pong_and_help_are_sentences_the_original_client_prints():
    """It printed PONG as an empty line from "(Friend)" (it shows a record from its fifth
    byte on), and HELP in the words of protocol v1 (BYE, MSG), which it never sees."""
    assert LEGACY.render(Pong()) == record("SEND PONG")
    shown = texts(help_records())
    assert shown == [f"SEND {line}" for line in HELP]
    assert LEGACY.help() == help_records()
    words = " ".join(shown).split()
    for v1_only in ("BYE", "MSG", "FREE", "PONG)", "ENDED", "CONNECTED", "WELCOME"):
        assert v1_only not in words
    for command in ("GET:", "CONNECT", "#GOODBYE#:", "#CLOSE#:", "PING:", "HELP:"):
        assert command in words


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (record("GET"), True),
        (record("CONNECT 3"), True),
        (record("GET\r\n"), True),  # a line break ending the text
        (b"GET\0" + bytes(range(1, 253)), True),  # padded with garbage, a \n in it
        (b"GET\0", None),  # a record comes whole: wait for it
        (b"GET", None),
        (b"GET\n\0", None),
        (b"GET\n", False),
        (b"GET\nx\0", False),
        (b"caf\xc3\xa9\r\n", False),
        (b"x" * 256 + b"\0", False),  # no NUL within a record's worth
        (bytes(256), False),  # no text
        (b"\x01\x02" + bytes(254), False),  # control characters are no typed text
        (b"\xff\xfe" + bytes(254), False),  # nor is what is not UTF-8
    ],
)
def test_sniff(head, verdict):
    assert sniff(head) is verdict


def test_the_wrong_port_hint_is_one_record_naming_the_legacy_port():
    assert texts(wrong_port(5001)) == [
        "SEND wrong port: this is the server's port for protocol v1; "
        "this client connects to port 5001"
    ]
    assert texts(wrong_port(None)) == [
        "SEND wrong port: this is the server's port for protocol v1; "
        "it has no port for this client (--legacy-port)"
    ]
