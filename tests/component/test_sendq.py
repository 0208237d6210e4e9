"""``--sendq`` on one client's socket glue (``ClientProtocol``), over a socket that takes nothing.

A client that reads nothing is cut once more than ``--sendq`` waits for it,
but its own answer to ``GET`` is a line that grows with the server (1.2 MB
at 100,000 clients): that one write may wait on top of ``--sendq``, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any, cast

import pytest

from ipc import messages as m
from matchmaker.config import Config
from wire.dialects import LINE
from wire.replies import Listing
from workers.connection import Limits
from workers.protocol import ClientProtocol

SENDQ = 4096


class Stuck:
    """A transport whose peer reads nothing and whose kernel holds nothing more."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.buffer += data

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Host:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.config = dataclasses.replace(Config(), sendq=SENDQ)
        self.limits = Limits.of(0, SENDQ, 4096)
        self.congested: set[ClientProtocol] = set()
        self.sent: list[m.ToMatchmaker] = []

    def attach(self, client: ClientProtocol) -> None: ...
    def detach(self, client: ClientProtocol) -> None: ...
    def lost(self, client: ClientProtocol) -> None: ...
    def drained(self, client: ClientProtocol) -> None: ...
    def mark_dirty(self, client: ClientProtocol) -> None: ...

    def to_matchmaker(self, message: m.ToMatchmaker) -> None:
        self.sent.append(message)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def stuck_client(loop: asyncio.AbstractEventLoop) -> tuple[ClientProtocol, Stuck]:
    host = Host(loop)
    client = ClientProtocol(host, 1, LINE)
    transport = Stuck()
    client.connection_made(cast(asyncio.Transport, transport))
    assert client.core.welcome(5, 500)
    client.flush()
    return client, transport


def listing(size: int) -> Listing:
    """A CLIENTS line of about ``size`` bytes."""
    words = " ".join(f"{cid}=FREE" for cid in range(1, size // 7))
    return Listing(f"CLIENTS {words}")


def get(client: ClientProtocol, answer: Listing) -> None:
    client.data_received(b"GET\n")
    assert client.core.answer(answer)
    client.flush()


def test_a_get_answer_longer_than_the_sendq_is_sent_whole(loop: asyncio.AbstractEventLoop):
    client, transport = stuck_client(loop)
    answer = listing(4 * SENDQ)
    get(client, answer)
    assert not client.core.closed
    assert transport.buffer == b"WELCOME 5\n" + answer.line().encode() + b"\n"


def test_asking_again_without_reading_the_first_answer_is_cut(loop: asyncio.AbstractEventLoop):
    client, transport = stuck_client(loop)
    get(client, listing(4 * SENDQ))
    get(client, listing(4 * SENDQ))
    assert client.core.closed
    assert transport.buffer.endswith(b"\nERROR SLOW_CONSUMER\n")


def test_short_writes_are_still_cut_past_the_sendq(loop: asyncio.AbstractEventLoop):
    client, transport = stuck_client(loop)
    pongs = 0
    while not client.core.closed:
        client.data_received(b"PING\n")
        client.flush()
        pongs += 1
    assert len(b"WELCOME 5\n") + 5 * (pongs - 1) <= SENDQ < len(b"WELCOME 5\n") + 5 * pongs
    assert transport.buffer.endswith(b"PONG\nERROR SLOW_CONSUMER\n")
