"""What a worker keeps of an idle client, over real sockets: no more than it needs, and
every transport still counted until it is lost (docs/PERFORMANCE.md, "Memory")."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from ipc import messages as m
from matchmaker.config import Config
from wire.codec import LineDecoder
from wire.legacy import RecordDecoder
from workers.connection import Connection
from workers.hub import Hub
from workers.output import DirectOutput, PacedOutput
from workers.protocol import ClientProtocol

TIMEOUT = 5.0


class Outbox:
    def __init__(self) -> None:
        self.sent: list[m.ToMatchmaker] = []

    def send(self, message: m.ToMatchmaker) -> None:
        self.sent.append(message)


class Mover:
    """Takes every client it is given, as another worker with room would."""

    def send(self, to: int, group: list[tuple[int, object]]) -> list[bool]:
        return [True] * len(group)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def run_until(loop: asyncio.AbstractEventLoop, done, what: str) -> None:
    """Run the loop until ``done()`` holds; fail after ``TIMEOUT``."""

    async def wait() -> None:
        while not done():
            await asyncio.sleep(0.001)

    try:
        loop.run_until_complete(asyncio.wait_for(wait(), TIMEOUT))
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


def recv(loop: asyncio.AbstractEventLoop, end: socket.socket) -> bytes:
    """What the far end ``end`` reads next, the loop running meanwhile."""
    return loop.run_until_complete(asyncio.wait_for(loop.sock_recv(end, 100), TIMEOUT))


def serve(loop: asyncio.AbstractEventLoop, hub: Hub, n: int) -> list[socket.socket]:
    """``n`` clients adopted and welcomed; their far ends, each with its WELCOME read."""
    ends = []
    for _ in range(n):
        ours, theirs = socket.socketpair()
        hub.adopt(ours)
        ends.append(theirs)
    run_until(loop, lambda: len(hub.clients) == n, "every client is attached")
    hub.from_matchmaker([[m.Welcome(key, key + 100, 1) for key in hub.clients]])
    for i, end in enumerate(ends):
        end.setblocking(False)
        assert recv(loop, end) == f"WELCOME {i + 101}\n".encode()
    return ends


def finish(loop: asyncio.AbstractEventLoop, hub: Hub, ends: list[socket.socket]) -> None:
    """Stop the hub (every client gets OUTAGE and is closed) and the far ends."""
    loop.run_until_complete(hub.shutdown(TIMEOUT))
    for end in ends:
        end.close()
    assert hub.connections() == []


@pytest.mark.parametrize(
    "cls", [LineDecoder, RecordDecoder, Connection, ClientProtocol, DirectOutput, PacedOutput]
)
def test_per_client_objects_carry_no_dict(cls: type) -> None:
    """A class of which every client holds one has slots only: a ``__dict__`` beside them
    (the decoders had one, through a base class without ``__slots__``) is 56 bytes or more
    of every idle client."""
    assert cls.__dictoffset__ == 0
    assert not hasattr(cls.__new__(cls), "__dict__")


def test_an_idle_client_holds_no_list_of_lines(loop: asyncio.AbstractEventLoop) -> None:
    hub = Hub(0, Config(), loop, Outbox())  # type: ignore[arg-type]
    ends = serve(loop, hub, 2)
    assert [c.core.ready for c in hub.clients.values()] == [None, None]
    assert [c.core.decoder for c in hub.clients.values()] == [None, None]  # not a byte yet
    # a line read and handled leaves none behind either
    ends[0].sendall(b"PING\n")
    assert recv(loop, ends[0]) == b"PONG\n"
    assert [c.core.ready for c in hub.clients.values()] == [None, None]
    first, second = hub.clients.values()
    assert first.core.decoder is not None and second.core.decoder is None
    finish(loop, hub, ends)


def test_a_closing_client_counts_until_its_transport_is_lost(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = Hub(0, Config(), loop, Outbox())  # type: ignore[arg-type]
    ends = serve(loop, hub, 2)
    first, second = hub.clients.values()
    first.close(b"BYE\n")
    assert list(hub.clients.values()) == [second]
    assert hub.connections() == [second, first]  # closing, not lost yet
    assert recv(loop, ends[0]) == b"BYE\n"
    run_until(loop, lambda: first not in hub.connections(), "the closed one is lost")
    assert hub.connections() == [second]
    finish(loop, hub, ends)


def test_a_moved_client_counts_until_its_transport_is_lost(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = Hub(0, Config(), loop, Outbox())  # type: ignore[arg-type]
    ends = serve(loop, hub, 1)
    (client,) = hub.clients.values()
    hub.can_move(Mover())  # type: ignore[arg-type]
    hub.moving = {1: [(client, 7)]}
    hub.send_moving()
    assert hub.clients == {} and hub.connections() == [client]
    run_until(loop, lambda: not hub.connections(), "the moved one is lost")
    finish(loop, hub, ends)


def test_shutdown_waits_for_every_transport_and_no_longer(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """Every client gets OUTAGE, and the shutdown ends as the last transport is lost,
    not at its timeout (the clients that close leave ``clients`` for ``closing``)."""
    hub = Hub(0, Config(), loop, Outbox())  # type: ignore[arg-type]
    ends = serve(loop, hub, 3)
    closed_before = next(iter(hub.clients.values()))
    closed_before.close(b"BYE\n")
    assert recv(loop, ends[0]) == b"BYE\n"
    caplog.set_level(logging.WARNING, logger="workers.hub")

    async def stop() -> None:
        done = asyncio.ensure_future(hub.shutdown(60))
        for end in ends[1:]:
            reply = await loop.sock_recv(end, 100)
            assert reply == b"OUTAGE\n"
        for end in ends:
            end.close()
        await asyncio.wait_for(done, TIMEOUT)

    loop.run_until_complete(stop())
    assert hub.connections() == []
    assert "forcing close" not in caplog.text
