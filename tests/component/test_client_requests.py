"""workers.protocol.ClientProtocol: what a client's lines ask of the matchmaker, in both dialects.

No sockets: lines go straight into the client's decoder, and what it asks lands in
a fake outbox; what it is told is in its ``out`` buffer.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ipc import messages as m
from ipc.dialects import LegacyDialect, LineDialect
from ipc.legacy import record
from matchmaker.config import Config
from workers.hub import Hub
from workers.protocol import ClientProtocol


class Outbox:
    """Records what a hub sends the matchmaker."""

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


@pytest.fixture
def hub():
    loop = asyncio.new_event_loop()
    try:
        yield Hub(0, Config(), loop, Outbox())
    finally:
        loop.close()


def welcomed(hub, key, cid, dialect=LineDialect):
    client = hub.clients[key] = ClientProtocol(hub, key, dialect)
    hub._welcome(m.Welcome(key, cid, 1))
    client.out.clear()
    return client


def say(client, text):
    if client.dialect is LegacyDialect:
        client.decoder.receive(record(text))
    else:
        client.decoder.receive(text.encode() + b"\n")
    client.drain()


@pytest.mark.parametrize("dialect", [LineDialect, LegacyDialect], ids=["line", "legacy"])
def test_a_connect_is_stamped_when_it_is_read(hub, dialect):
    """A client given the id after this moment is not the one the request names."""
    client = welcomed(hub, 7, 1, dialect)
    before = time.monotonic_ns()
    say(client, "CONNECT 2")
    after = time.monotonic_ns()
    (request,) = hub.outbox.sent
    assert request[:3] == m.Connect(1, 2, 7)[:3]
    assert before <= request.asked <= after


# ---- a CONNECT that crossed the partner's ------------------------------------------------


def paired(hub, a, b, requested_by_a=True):
    """``a``'s CONNECT paired ``a`` and ``b``, both on this worker (target told first)."""
    hub._paired(m.Paired(b.key, 1, a.cid, 0, a.key, not requested_by_a))
    hub._paired(m.Paired(a.key, 1, b.cid, 0, b.key, requested_by_a))
    a.out.clear()
    b.out.clear()
    hub.outbox.sent.clear()


@pytest.mark.parametrize(
    ("dialect", "talking"),
    [(LineDialect, b"ERROR TALKING 1\n"), (LegacyDialect, record("CONNECT TALK"))],
    ids=["line", "legacy"],
)
def test_the_asked_ends_first_line_connect_to_its_partner_is_answered_talking(
    hub, dialect, talking
):
    a, b = welcomed(hub, 1, 1), welcomed(hub, 2, 2, dialect)
    paired(hub, a, b)
    say(b, "CONNECT 1")  # sent before b read its CONNECTED
    assert bytes(b.out) == talking
    assert bytes(a.out) == b""  # not chat
    assert hub.outbox.sent == []
    say(b, "CONNECT 1")  # a second one is chat, as any later line
    assert bytes(a.out) == b"MSG CONNECT 1\n"
    assert bytes(b.out) == talking


@pytest.mark.parametrize("line", ["connect 1", "  CONNECT   1 "])
def test_the_crossed_connect_is_read_as_a_command_would_be(hub, line):
    a, b = welcomed(hub, 1, 1), welcomed(hub, 2, 2)
    paired(hub, a, b)
    say(b, line)
    assert bytes(b.out) == b"ERROR TALKING 1\n"
    assert bytes(a.out) == b""


@pytest.mark.parametrize("first", ["CONNECT 3", "GET", "PING", "CONNECT x", "hello", "CONNECT"])
def test_any_other_first_line_is_chat(hub, first):
    a, b = welcomed(hub, 1, 1), welcomed(hub, 2, 2)
    paired(hub, a, b)
    say(b, first)
    say(b, "CONNECT 1")  # not the first line any more
    assert bytes(a.out) == f"MSG {first}\nMSG CONNECT 1\n".encode()
    assert bytes(b.out) == b""


def test_the_requesters_connect_after_its_own_is_chat(hub):
    """``a`` asked: a line it sent after its CONNECT is a message, whatever it says."""
    a, b = welcomed(hub, 1, 1), welcomed(hub, 2, 2)
    paired(hub, a, b)
    say(a, "CONNECT 2")
    assert bytes(b.out) == b"MSG CONNECT 2\n"
    assert bytes(a.out) == b""


def test_a_client_paired_while_its_own_request_waited_gets_chat(hub):
    """Its lines after that request were read after the pairing, never before it: the
    matchmaker answers the request, and the next line is chat."""
    a, b = welcomed(hub, 1, 1), welcomed(hub, 2, 2)
    say(b, "GET")
    assert b.pending
    paired(hub, a, b)
    hub._answer(m.Answer(2, "CLIENTS 1=BUSY 2=BUSY"))
    say(b, "CONNECT 1")
    assert bytes(a.out) == b"MSG CONNECT 1\n"
    assert bytes(b.out) == b"CLIENTS 1=BUSY 2=BUSY\n"
