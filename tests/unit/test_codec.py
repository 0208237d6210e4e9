"""wire.codec: framing, the line limit, UTF-8 and resync, in every chunking.

Every case is fed whole, byte by byte, in two halves at every split point and
with trailing bytes of an unfinished line (cf. h11 ``tests/test_io.py``). The
fuzz oracle follows h11's ``fuzz/afl-server.py``: whatever the bytes and
however they are split, ``feed`` never raises, yields only ``str`` or an
``ErrorCode``, and the chunking never changes the result.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.codec import DEFAULT_MAX_LINE, LineDecoder, encode
from wire.errors import ErrorCode

TOO_LONG = ErrorCode.TOO_LONG
ENCODING = ErrorCode.ENCODING

SMALL = 16  # a max_line small enough to write its edge cases out by hand


def feed_whole(data, max_line=DEFAULT_MAX_LINE):
    decoder = LineDecoder(max_line)
    return decoder.feed(data), decoder


def feed_chunks(chunks, max_line=DEFAULT_MAX_LINE):
    """Feed each chunk in turn; check the memory bound after every feed."""
    decoder = LineDecoder(max_line)
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        assert decoder.pending <= max_line + 1
    return events, decoder


def bytewise(data):
    return [data[i : i + 1] for i in range(len(data))]


def chunkings(data):
    """Whole, byte by byte, and in two pieces at every split point."""
    yield [data]
    yield bytewise(data)
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


def check(data, expected, max_line=DEFAULT_MAX_LINE, pending=0):
    """``data`` decodes to ``expected`` however it is split, holding ``pending`` bytes."""
    for chunks in chunkings(data):
        events, decoder = feed_chunks(chunks, max_line)
        assert events == expected, chunks
        assert decoder.pending == pending, chunks


# ---- plain framing ------------------------------------------------------------

FRAMING = [
    (b"hello\n", ["hello"]),
    (b"hello\r\n", ["hello"]),
    (b"a\nb\r\nc\n", ["a", "b", "c"]),
    (b"\n", [""]),
    (b"\r\n", [""]),
    (b"\n\n\r\n", ["", "", ""]),
    (b"a\rb\n", ["a\rb"]),  # a lone \r inside a line is kept
    (b"\ra\n", ["\ra"]),
    (b"a\r\r\n", ["a\r"]),  # only the one \r right before \n is dropped
    (b"\r\r\n", ["\r"]),
    (b"a\n\rb\n", ["a", "\rb"]),
    (b"nul\x00inside\n", ["nul\x00inside"]),
    (b"\x00\n", ["\x00"]),
    (b"  spaced  \n", ["  spaced  "]),
    (b"GET FREE\n", ["GET FREE"]),
    ("caf\u00e9 \u65e5\u672c \U0001f600\n".encode(), ["caf\u00e9 \u65e5\u672c \U0001f600"]),
]


@pytest.mark.parametrize(("data", "expected"), FRAMING)
def test_framing(data, expected):
    check(data, expected)


@pytest.mark.parametrize(("data", "expected"), FRAMING)
def test_framing_with_trailing_partial_line(data, expected):
    check(data + b"partial", expected, pending=len(b"partial"))


@pytest.mark.parametrize(
    ("data", "pending"),
    [(b"", 0), (b"abc", 3), (b"abc\r", 4), (b"\r", 1), ("\u00e9".encode()[:1], 1)],
)
def test_unfinished_line_is_held_not_emitted(data, pending):
    check(data, [], pending=pending)


def test_held_line_completes_on_a_later_feed():
    decoder = LineDecoder()
    assert decoder.feed(b"hel") == []
    assert decoder.pending == 3
    assert decoder.feed(b"lo\r") == []
    assert decoder.pending == 6
    assert decoder.feed(b"\nnext") == ["hello"]
    assert decoder.pending == 4
    assert decoder.feed(b"\n") == ["next"]
    assert decoder.pending == 0


def test_multibyte_character_split_across_feeds():
    decoder = LineDecoder()
    data = "\u20ac\n".encode()
    assert [decoder.feed(data[i : i + 1]) for i in range(len(data))] == [[], [], [], ["\u20ac"]]


def test_max_line_must_be_positive():
    with pytest.raises(ValueError, match="max_line must be positive"):
        LineDecoder(0)
    with pytest.raises(ValueError):
        LineDecoder(-1)
    assert LineDecoder(1).feed(b"x\nxx\n") == ["x", TOO_LONG]


def test_default_limit_is_4096():
    assert DEFAULT_MAX_LINE == 4096
    assert LineDecoder().max_line == 4096


# ---- the line limit -------------------------------------------------------------


@pytest.mark.parametrize("max_line", [SMALL, DEFAULT_MAX_LINE])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_limit_boundaries(max_line, crlf):
    end = b"\r\n" if crlf else b"\n"
    at_limit = b"x" * max_line
    check(b"x" * (max_line - 1) + end, ["x" * (max_line - 1)], max_line)
    check(at_limit + end, ["x" * max_line], max_line)
    check(b"x" * (max_line + 1) + end, [TOO_LONG], max_line)
    check(b"x" * (max_line + 1) + end + b"ok" + end, [TOO_LONG, "ok"], max_line)


@pytest.mark.parametrize("max_line", [SMALL, DEFAULT_MAX_LINE])
def test_limit_counts_bytes_not_characters(max_line):
    euro = "\u20ac"  # three bytes in UTF-8
    fits = euro * (max_line // 3)
    check((fits + "\n").encode(), [fits], max_line)
    over = euro * (max_line // 3 + 1)
    check((over + "\n").encode(), [TOO_LONG], max_line)


def test_limit_with_cr_inside_the_line_counts_the_cr():
    # a \r that is not right before \n is content, so it counts toward the limit
    check(b"x" * (SMALL - 2) + b"\rx\n", ["x" * (SMALL - 2) + "\rx"], SMALL)
    check(b"x" * (SMALL - 1) + b"\rx\n", [TOO_LONG], SMALL)
    check(b"x" * (SMALL - 1) + b"\r\r\n", ["x" * (SMALL - 1) + "\r"], SMALL)
    check(b"x" * SMALL + b"\r\r\n", [TOO_LONG], SMALL)


def test_limit_is_per_line_not_per_feed():
    data = b"".join(b"x" * SMALL + b"\n" for _ in range(10))
    check(data, ["x" * SMALL] * 10, SMALL)


@pytest.mark.parametrize("max_line", [SMALL, DEFAULT_MAX_LINE])
def test_too_long_is_reported_once_then_resyncs(max_line):
    long_line = b"y" * (max_line * 5 + 3)
    data = b"first\n" + long_line + b"\r\n" + b"after\n"
    check(data, ["first", TOO_LONG, "after"], max_line)


def test_too_long_is_reported_once_per_long_line():
    data = b"a" * 40 + b"\n" + b"b" * 17 + b"\n" + b"ok\n" + b"c" * 100 + b"\n"
    check(data, [TOO_LONG, TOO_LONG, "ok", TOO_LONG], SMALL)


def test_too_long_is_reported_as_soon_as_the_limit_is_passed():
    decoder = LineDecoder(SMALL)
    assert decoder.feed(b"z" * (SMALL + 1)) == []  # a \r\n may still come
    assert decoder.feed(b"\r") == [TOO_LONG]
    assert decoder.pending == 0
    assert decoder.feed(b"z" * 1000) == []  # still the same line: no second report
    assert decoder.pending == 0
    assert decoder.feed(b"\nok\n") == ["ok"]


def test_long_line_in_many_chunks_holds_at_most_max_line_plus_one():
    decoder = LineDecoder(SMALL)
    events = []
    for _ in range(1000):
        events += decoder.feed(b"abc")
        assert decoder.pending <= SMALL + 1
    events += decoder.feed(b"\nnext\n")
    assert events == [TOO_LONG, "next"]
    assert decoder.pending == 0


def test_long_line_in_one_chunk_leaves_nothing_pending():
    decoder = LineDecoder(SMALL)
    assert decoder.feed(b"q" * 10_000) == [TOO_LONG]
    assert decoder.pending == 0
    assert decoder.feed(b"q" * 10_000 + b"\nr\n") == ["r"]


def test_default_limit_long_line_byte_by_byte():
    decoder = LineDecoder()
    events = []
    for _ in range(DEFAULT_MAX_LINE * 3):
        events += decoder.feed(b"w")
        assert decoder.pending <= DEFAULT_MAX_LINE + 1
    assert events == [TOO_LONG]
    assert decoder.feed(b"\r\n" + b"v" * DEFAULT_MAX_LINE + b"\n") == ["v" * DEFAULT_MAX_LINE]


# ---- UTF-8 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",
        b"\xc3",  # truncated two-byte sequence
        b"\xc3(",
        b"\xe2\x82",  # truncated three-byte sequence
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xc0\xaf",  # overlong '/'
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"ok\x80",
    ],
)
def test_invalid_utf8_is_reported_then_next_line_is_fine(bad):
    check(bad + b"\n" + b"fine\n", [ENCODING, "fine"])
    check(b"before\r\n" + bad + b"\r\n" + b"fine\r\n", ["before", ENCODING, "fine"])


def test_too_long_wins_over_encoding():
    check(b"\xff" * (SMALL + 1) + b"\n" + b"ok\n", [TOO_LONG, "ok"], SMALL)


# ---- linear time ------------------------------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts how many bytes ``find`` had to look at."""

    looked = 0

    def find(self, sub, start=0, *args):
        CountingBuffer.looked += max(len(self) - start, 0)
        return super().find(sub, start, *args)


def test_byte_by_byte_feed_never_rescans():
    """One-byte feeds: each byte is searched for ``\\n`` once, not once per feed."""

    class Probe(LineDecoder):
        _buffer = CountingBuffer

    decoder = Probe()
    CountingBuffer.looked = 0
    unit = b"z" * 1000 + b"\n"
    data = unit * 100
    feed = decoder.feed
    count = 0
    for i in range(len(data)):
        count += len(feed(data[i : i + 1]))
    assert count == 100
    assert 0 < CountingBuffer.looked <= len(data)


def test_a_decoder_between_lines_holds_no_buffer():
    """An empty bytearray is 56 bytes of every idle connection: none is kept."""
    decoder = LineDecoder(SMALL)
    assert decoder.pending == 0 and decoder.between_lines()
    assert decoder.feed(b"one\ntw") == ["one"]
    assert decoder.pending == 2 and not decoder.between_lines()
    assert decoder.feed(b"o\n") == ["two"]
    assert decoder._buf == b"" and type(decoder._buf) is bytes
    assert decoder.feed(b"z" * (SMALL + 5)) == [TOO_LONG]  # discarded, not held
    assert decoder.pending == 0 and not decoder.between_lines()
    assert decoder.feed(b"zz\nok\n") == ["ok"]
    assert decoder.between_lines() and type(decoder._buf) is bytes


def test_one_megabyte_byte_by_byte_completes():
    decoder = LineDecoder(SMALL)
    data = (b"z" * 5000 + b"\n") * 200
    events = []
    feed = decoder.feed
    for i in range(len(data)):
        events += feed(data[i : i + 1])
    assert events == [TOO_LONG] * 200


# ---- properties -------------------------------------------------------------------

line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))


@given(line=line_text)
def test_encode_is_line_plus_newline(line):
    assert encode(line) == line.encode("utf-8") + b"\n"


@given(line=line_text, max_line=st.integers(1, 64))
def test_encode_then_decode_round_trips(line, max_line):
    decoder = LineDecoder(max_line)
    expected = [line] if len(line.encode()) <= max_line else [TOO_LONG]
    assert decoder.feed(encode(line)) == expected
    assert decoder.pending == 0


@given(lines=st.lists(line_text, max_size=8))
def test_many_encoded_lines_decode_in_any_split(lines):
    data = b"".join(encode(line) for line in lines)
    events, decoder = feed_chunks(bytewise(data))
    assert events == lines
    assert decoder.pending == 0


PIECES = st.sampled_from([b"a", b"\n", b"\r", b"\r\n", b"\xff", b"\xc3\xa9", b"\xc3", b"\x00"])


@st.composite
def chunked(draw):
    """Bytes rich in terminators and bad UTF-8, plus a random split of them."""
    if draw(st.booleans()):
        data = b"".join(draw(st.lists(PIECES, max_size=80)))
    else:
        data = draw(st.binary(max_size=200))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(deadline=None)
@given(case=chunked(), max_line=st.sampled_from([1, 2, 3, 8, SMALL, DEFAULT_MAX_LINE]))
def test_fuzz_oracle(case, max_line):
    data, chunks = case
    whole, whole_decoder = feed_whole(data, max_line)
    assert whole_decoder.pending <= max_line + 1
    for event in whole:
        assert isinstance(event, str) or event in (TOO_LONG, ENCODING)
        if isinstance(event, str):
            assert "\n" not in event
            assert len(event.encode()) <= max_line
    split, split_decoder = feed_chunks(chunks, max_line)
    assert split == whole
    assert split_decoder.pending == whole_decoder.pending
    bytes_, _ = feed_chunks(bytewise(data), max_line)
    assert bytes_ == whole


@settings(deadline=None)
@given(case=chunked(), max_line=st.sampled_from([1, 4, SMALL]))
def test_fuzz_state_continues_identically(case, max_line):
    """After any prefix in any chunking, the decoder reads a fresh line the same way."""
    data, chunks = case
    tail = b"\nafter\n"
    whole, _ = feed_whole(data + tail, max_line)
    split, _ = feed_chunks([*chunks, tail], max_line)
    assert split == whole
    assert whole[-1] == ("after" if max_line >= 5 else TOO_LONG)


def test_lines_stay_bytes_until_taken_one_at_a_time():
    """A paused connection holds its unread lines as one buffer, not one object each."""
    decoder = LineDecoder(8)
    decoder.receive(b"one\r\ntwo\n" + b"x" * 20 + b"\nthree")
    assert decoder.pending == len(b"one\r\ntwo\n" + b"x" * 20 + b"\nthree")
    assert decoder.next_event() == "one"
    assert decoder.pending == len(b"two\n" + b"x" * 20 + b"\nthree")
    assert decoder.next_event() == "two"
    assert decoder.next_event() is ErrorCode.TOO_LONG
    assert decoder.next_event() is None  # "three" is not ended yet
    decoder.receive(b"\n")
    assert decoder.next_event() == "three"
    assert decoder.next_event() is None
    assert decoder.pending == 0
