"""workers.hub: a handed-over socket is served without a Task, and a failure is handled."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
import uvloop

from ipc import messages as m
from matchmaker.config import Config
from workers.hub import Hub, start

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def loop(request):
    loop = LOOPS[request.param]()
    yield loop
    loop.close()


class Outbox:
    """What the hub says to the matchmaker."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def run_until(loop: asyncio.AbstractEventLoop, done: Any, timeout: float = 5.0) -> None:
    async def wait() -> None:
        deadline = loop.time() + timeout
        while not done():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.001)

    loop.run_until_complete(wait())


def test_start_runs_a_coroutine_through_its_awaits_to_its_end(loop):
    future = loop.create_future()
    results: list[BaseException | None] = []
    pending: set[asyncio.Future[Any]] = set()

    async def serving() -> str:
        return await future

    start(serving(), results.append, pending)
    assert results == [] and pending == {future}
    loop.call_soon(future.set_result, "ready")
    run_until(loop, lambda: results)
    assert results == [None] and pending == set()


@pytest.mark.parametrize("when", ["at once", "after an await"])
def test_start_hands_a_coroutine_s_exception_to_done(loop, when):
    future = loop.create_future()
    results: list[BaseException | None] = []
    pending: set[asyncio.Future[Any]] = set()

    async def serving() -> None:
        if when == "after an await":
            await future
        raise OSError("no")

    start(serving(), results.append, pending)
    loop.call_soon(future.set_result, None)
    run_until(loop, lambda: results)
    assert [type(r) for r in results] == [OSError] and pending == set()


def test_an_adopted_socket_is_served_and_asks_for_its_id(loop):
    """(Without parking: a parked client gets its transport later, workers.parking.)"""
    outbox = Outbox()
    hub = Hub(0, Config(park=False), loop, outbox)  # type: ignore[arg-type]
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    with listener, client:
        hub.adopt(conn)
        run_until(loop, lambda: outbox.sent)
        assert outbox.sent == [m.Register(1, False)]
        assert list(hub.clients) == [1] and hub._starting == set()
        hub.clients[1].transport.close()  # type: ignore[union-attr]
        run_until(loop, lambda: not hub.connections())


def test_a_socket_that_cannot_be_served_is_closed_and_logged(loop, caplog):
    outbox = Outbox()
    hub = Hub(0, Config(park=False), loop, outbox)  # type: ignore[arg-type]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # no stream: refused
    with b, caplog.at_level(logging.INFO, "matchmaker.drops"):
        hub.adopt(a)
        run_until(loop, lambda: a.fileno() == -1)
    assert outbox.sent == [] and hub.clients == {} and hub._starting == set()
    assert "drop reason=error" in caplog.text and "could not serve the socket" in caplog.text
