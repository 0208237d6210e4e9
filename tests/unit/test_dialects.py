"""wire.dialects and the reply model: one typed reply, rendered by each dialect, read back.

What the matchmaker decides crosses a queue packed and comes back equal; what
the v1 dialect writes, the client's parser reads back as the same reply; the
``msg`` fast path writes exactly what rendering a ``Msg`` would.
"""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from ipc import messages as m
from wire.dialects import HELP, LEGACY, LINE
from wire.errors import ErrorCode, ProtocolError
from wire.legacy import record
from wire.replies import (
    BUSY,
    FREE,
    WAITING,
    Bye,
    Cancelled,
    Clients,
    Connected,
    Ended,
    Error,
    Listing,
    Msg,
    Named,
    Outage,
    Pong,
    Waiting,
    Welcome,
    clients_line,
    pack,
    parse_reply,
    unpack,
)

ids = st.integers(min_value=1, max_value=2**31)
words = st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"]), min_size=1)
texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"))

names = st.one_of(st.just(""), st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,23}", fullmatch=True))
decided = st.one_of(
    st.builds(Clients, st.lists(
        st.tuples(ids, st.sampled_from([FREE, BUSY, WAITING]), names), unique_by=lambda e: e[0]
    ).map(lambda entries: tuple(sorted(entries)))),
    st.builds(Error, st.sampled_from(list(ErrorCode)), st.one_of(st.just(""), words)),
    st.builds(Ended, ids),
    st.just(Bye()),
    st.just(Outage()),
    st.just(Waiting()),
    st.just(Cancelled()),
    st.builds(Named, names),
)  # fmt: skip


@given(decided)
def test_a_decided_reply_crosses_a_queue_unchanged(reply):
    answer = m.Answer.of(7, reply)
    back = m.from_wire(pickle.loads(pickle.dumps(m.to_wire([answer]))))[0]
    assert back == answer and back.reply == reply and type(back.reply) is type(reply)
    assert unpack(pack(reply)) == reply
    refuse = m.Refuse.of(8, reply)
    assert m.from_wire(m.to_wire([refuse]))[0].reply == reply


def test_a_packed_reply_is_plain_data():
    """Plain tuples, strings and ints pickle in C: no class, no enum on the queue."""
    packed = pack(Error(ErrorCode.BUSY, "4"))
    assert packed == (1, "BUSY", "4")
    assert pack(Clients(((1, 0, ""), (2, 1, "")))) == (0, ((1, 0, ""), (2, 1, "")))


@given(decided)
def test_the_client_reads_back_what_the_line_dialect_writes(reply):
    data = LINE.render(reply)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert parse_reply(data.decode()[:-1]) == reply


@given(texts)
def test_the_msg_fast_path_is_rendering_a_msg(text):
    assert LINE.msg(text) == LINE.render(Msg(text))
    assert LEGACY.msg(text) == LEGACY.render(Msg(text))


@given(ids, st.booleans())
def test_connected_shows_who_asked_only_in_legacy(peer, requested):
    assert LINE.render(Connected(peer, requested)) == b"CONNECTED %d\n" % peer
    mark = "" if requested else "%"
    assert LEGACY.render(Connected(peer, requested)) == record(f"CONNECT SUCCESS{mark} {peer}")


def test_legacy_words_for_every_reply_the_server_makes():
    assert LEGACY.render(Welcome(3)) == b""
    assert LEGACY.render(Pong()) == record("SEND PONG")
    assert LEGACY.render(Outage()) == record("OUTAGE")
    for code in (ErrorCode.FULL, ErrorCode.TOO_MANY, ErrorCode.SLOW_CONSUMER, ErrorCode.IDLE):
        assert LEGACY.render(Error(code)) == record("ABORT")
    assert LEGACY.render(Error(ErrorCode.UNKNOWN_COMMAND, "x")) == record("INVALID COMMAND")
    assert b"".join(map(LEGACY.render, HELP)) == b"".join(record(f"SEND {h.text}") for h in HELP)


def test_help_is_one_help_line_per_entry():
    text = b"".join(map(LINE.render, HELP)).decode()
    assert text.splitlines() == [h.line() for h in HELP]
    assert all(line.startswith("HELP ") for line in text.splitlines())
    assert LINE.help() == b"".join(map(LINE.render, HELP))


def test_a_protocol_error_is_its_error_reply():
    exc = ProtocolError(ErrorCode.OFFLINE, "9")
    assert exc.reply == Error(ErrorCode.OFFLINE, "9")
    assert LINE.render(exc.reply) == b"ERROR OFFLINE 9\n"
    assert exc.line() == "ERROR OFFLINE 9"


def test_a_listing_the_matchmaker_rendered_is_worded_as_the_clients_it_lists():
    """``GET`` at 100,000 clients: the worker writes the line the matchmaker kept rendered,
    and the legacy client still gets its positional statuses."""
    for entries in (((1, FREE, ""), (2, BUSY, "ann"), (4, WAITING, "")), ()):
        listing = Listing(clients_line(entries))
        assert listing.clients() == Clients(entries)
        assert unpack(pack(listing)) == listing
        for dialect in (LINE, LEGACY):
            assert dialect.render(listing) == dialect.render(Clients(entries))
    assert LINE.render(Listing("CLIENTS 1=FREE")) == b"CLIENTS 1=FREE\n"
