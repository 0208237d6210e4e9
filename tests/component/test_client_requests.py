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
