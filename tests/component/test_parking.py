"""workers.parking over real TCP sockets: a parked client is served as one with a transport
would be, on every path (on asyncio's loop and on uvloop, as the workers run)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from ipc import messages as m
from matchmaker.config import Config, uvloop_available
from wire.dialects import LEGACY
from wire.replies import Bye
from workers.hub import Hub
from workers.protocol import ClientProtocol

TIMEOUT = 5.0
LOOPS = ["asyncio", *(["uvloop"] if uvloop_available() else [])]


class Outbox:
    def __init__(self) -> None:
        self.sent: list[m.ToMatchmaker] = []

    def send(self, message: m.ToMatchmaker) -> None:
        self.sent.append(message)


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    if request.param == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


class World:
    """A hub on ``loop`` and the far ends of its clients, over loopback TCP."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, listener: socket.socket, **config: object
    ) -> None:
        self.loop, self.listener = loop, listener
        self.outbox = Outbox()
        self.hub = Hub(0, Config(**config), loop, self.outbox)  # type: ignore[arg-type]
        self.ends: list[socket.socket] = []

    def connect(self, small: bool = False, dialect: object = None) -> socket.socket:
        """A client adopted (not yet welcomed); its far end. ``small``: small buffers, so
        that the socket does not take a big write whole."""
        far = socket.socket()
        if small:
            far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        far.connect(self.listener.getsockname())
        ours, _ = self.listener.accept()
        if small:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        far.setblocking(False)
        self.ends.append(far)
        if dialect is None:
            self.hub.adopt(ours)
        else:
            self.hub.adopt(ours, dialect)  # type: ignore[arg-type]
        return far

    def client(self, n: int = 1) -> tuple[ClientProtocol, socket.socket]:
        """A client adopted and welcomed (id ``key + 100``): its glue and its far end."""
        far = self.connect()
        self.run_until(lambda: len(self.hub.clients) == n, "the client is attached")
        key = max(self.hub.clients)
        self.hub.from_matchmaker([[m.Welcome(key, key + 100, 1)]])
        assert self.read_line(far) == f"WELCOME {key + 100}\n".encode()
        return self.hub.clients[key], far

    def run_until(self, done, what: str) -> None:
        async def wait() -> None:
            while not done():
                await asyncio.sleep(0.001)

        try:
            self.loop.run_until_complete(asyncio.wait_for(wait(), TIMEOUT))
        except TimeoutError:
            pytest.fail(f"timed out waiting until {what}")

    def read(self, far: socket.socket, size: int = 65536) -> bytes:
        return self.loop.run_until_complete(
            asyncio.wait_for(self.loop.sock_recv(far, size), TIMEOUT)
        )

    def read_line(self, far: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            got = self.read(far, 1)
            assert got, f"closed after {data!r}"
            data += got
        return data

    def read_all(self, far: socket.socket) -> bytes:
        """Everything until the server closes its end."""
        data = b""
        while got := self.read(far):
            data += got
        return data

    def drops(self) -> list[m.Drop]:
        return [msg for msg in self.outbox.sent if isinstance(msg, m.Drop)]

    def finish(self) -> None:
        self.loop.run_until_complete(self.hub.shutdown(TIMEOUT))
        for far in self.ends:
            far.close()
        assert self.hub.connections() == []
        assert self.hub.lot is None  # closed


@pytest.fixture
def world(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> Iterator[World]:
    world = World(loop, listener)
    yield world
    world.finish()


def parked(client: ClientProtocol) -> bool:
    return client.transport is None


def test_a_new_client_is_parked_and_welcomed_without_a_transport(world: World) -> None:
    client, _ = world.client()
    assert parked(client)
    assert world.hub.lot is not None and len(world.hub.lot) == 1
    assert world.outbox.sent[0] == m.Register(client.key, False)


def test_park_off_gives_every_client_its_transport(
    loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    world = World(loop, listener, park=False)
    client, _ = world.client()
    assert not parked(client) and world.hub.lot is None
    world.finish()


def test_a_legacy_client_is_not_parked(world: World) -> None:
    world.connect(dialect=LEGACY)
    world.run_until(lambda: len(world.hub.clients) == 1, "the client is attached")
    (client,) = world.hub.clients.values()
    assert not parked(client)


def test_its_first_line_gives_it_a_transport_and_is_answered(world: World) -> None:
    client, far = world.client()
    far.send(b"PING\n")
    assert world.read_line(far) == b"PONG\n"
    assert not parked(client) and len(world.hub.lot or ()) == 0
    far.send(b"PING\n")
    assert world.read_line(far) == b"PONG\n"


def test_a_line_sent_before_its_welcome_waits_for_it(world: World) -> None:
    far = world.connect()
    far.send(b"PING\n")
    world.run_until(lambda: len(world.hub.clients) == 1, "the client is attached")
    (key,) = world.hub.clients
    world.run_until(lambda: not parked(world.hub.clients[key]), "the client is promoted")
    world.hub.from_matchmaker([[m.Welcome(key, 5, 1)]])
    assert world.read_line(far) == b"WELCOME 5\n"
    assert world.read_line(far) == b"PONG\n"


def test_a_connect_is_stamped_when_the_lot_saw_it_not_when_the_transport_read_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CONNECT is stamped as it is read (a target given its id later is not the one
    named); a parked client's transport reads it some loop iterations after the lot saw
    it, long enough for its target to leave and a newcomer to take the id (a race the
    integration test ``test_a_connect_never_reaches_a_newcomer_given_its_targets_id``
    caught)."""
    client, far = world.client()
    read_at: list[int] = []
    received = ClientProtocol.data_received

    def data_received(self: ClientProtocol, data: bytes) -> None:
        read_at.append(time.monotonic_ns())
        received(self, data)

    monkeypatch.setattr(ClientProtocol, "data_received", data_received)
    far.send(b"CONNECT 7\n")
    world.run_until(lambda: isinstance(world.outbox.sent[-1], m.Connect), "the CONNECT")
    connect = world.outbox.sent[-1]
    assert isinstance(connect, m.Connect) and connect.target == 7
    assert 0 < connect.asked < read_at[0]
    assert client.woke == 0  # the reads after the first are stamped as they come
    assert client.stamp() > connect.asked


def test_writes_reach_a_parked_client_in_order(world: World) -> None:
    client, far = world.client()
    world.hub.from_matchmaker([[m.Paired(client.key, 9, 7, 1, 3, False)]])
    world.hub.from_matchmaker([[m.Deliver(client.key, 9, "hello", 1)]])
    assert world.read_line(far) == b"CONNECTED 7\n"
    assert world.read_line(far) == b"MSG hello\n"
    assert parked(client)


def test_eof_while_parked_is_a_close(world: World) -> None:
    client, far = world.client()
    far.shutdown(socket.SHUT_WR)
    world.run_until(lambda: world.drops(), "the client's #CLOSE# reaches the matchmaker")
    assert world.drops() == [m.Drop(client.key + 100, client.key, answer=True)]
    world.hub.from_matchmaker([[m.Refuse.of(client.key, Bye())]])
    assert world.read_all(far) == b"BYE\n"
    world.run_until(lambda: not world.hub.connections(), "the client is lost")


@pytest.mark.parametrize("park", [True, False])
def test_a_hang_up_while_parked_is_a_close_as_with_a_transport(
    loop: asyncio.AbstractEventLoop, listener: socket.socket, park: bool
) -> None:
    world = World(loop, listener, park=park)
    client, far = world.client()
    far.close()
    world.ends.remove(far)
    world.run_until(lambda: world.drops(), "the client's #CLOSE# reaches the matchmaker")
    assert world.drops() == [m.Drop(client.key + 100, client.key, answer=True)]
    world.hub.from_matchmaker([[m.Refuse.of(client.key, Bye())]])  # to a closed socket
    world.run_until(lambda: not world.hub.connections(), "the client is lost")
    world.finish()


def test_a_reset_seen_on_a_write_while_parked_drops_the_client(world: World) -> None:
    client, far = world.client()
    far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    far.close()  # RST
    world.ends.remove(far)
    client.write_now(b"MSG anyone\n")  # before the loop hears of the reset
    client.write_now(b"MSG anyone\n")  # the first may have gone into the void
    assert world.hub.lot is not None and len(world.hub.lot) == 0
    world.run_until(lambda: not world.hub.connections(), "the client is lost")
    assert world.drops() == [m.Drop(client.key + 100, client.key)]


def test_a_write_the_socket_does_not_take_whole_goes_on_through_a_transport(
    world: World,
) -> None:
    far = world.connect(small=True)
    world.run_until(lambda: len(world.hub.clients) == 1, "the client is attached")
    (client,) = world.hub.clients.values()
    big = b"".join(b"MSG %06d\n" % i for i in range(30000))  # 330 kB, under --sendq
    client.write_now(big)
    assert client.output is not None and client.output.queued() > 0
    client.write_now(b"MSG last\n")  # behind the rest, while the transport is on its way
    got = b""
    while len(got) < len(big) + 9:
        got += world.read(far)
    assert got == big + b"MSG last\n"
    assert not parked(client)


def test_sendq_counts_what_waits_for_the_transport(
    loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    world = World(loop, listener, sendq=65536)
    far = world.connect(small=True)
    world.run_until(lambda: len(world.hub.clients) == 1, "the client is attached")
    (client,) = world.hub.clients.values()
    chunk = b"MSG " + b"x" * 99_995 + b"\n"  # 100 kB: one write past a tick may wait once
    client.write_now(chunk)
    assert world.hub.clients  # once is allowed
    client.write_now(chunk)
    assert not world.hub.clients  # twice is over --sendq: cut
    got = world.read_all(far)
    assert got.endswith(b"\nERROR SLOW_CONSUMER\n")
    world.finish()


def test_a_parked_client_closed_by_the_server_gets_its_last_line(world: World) -> None:
    client, far = world.client()
    world.hub.from_matchmaker([[m.Refuse.of(client.key, Bye())]])
    assert client in world.hub.connections()  # until its socket is closed
    assert world.read_all(far) == b"BYE\n"
    world.run_until(lambda: not world.hub.connections(), "the client is lost")
    assert world.hub.lot is not None and len(world.hub.lot) == 0


def test_a_parked_client_that_sent_unread_bytes_still_gets_its_last_line(
    world: World,
) -> None:
    """Closing a socket with unread input resets the connection, and the peer's kernel
    drops what it had not read: such a client is closed through a transport."""
    client, far = world.client()
    far.send(b"PING\n")
    client.close(b"BYE\n")  # before the loop saw the line
    assert world.read_line(far) == b"BYE\n"
    far.shutdown(socket.SHUT_WR)
    assert world.read_all(far) == b""
    world.run_until(lambda: not world.hub.connections(), "the client is lost")


def test_an_idle_parked_client_is_cut_by_the_sweep(
    loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    world = World(loop, listener, idle_timeout=0.05)
    client, far = world.client()
    world.hub.sweep()
    assert world.read_all(far) == b"ERROR IDLE\n"
    world.run_until(lambda: not world.hub.connections(), "the client is lost")
    assert world.drops() == [m.Drop(client.key + 100, client.key)]
    world.finish()


def test_shutdown_sends_outage_to_parked_clients(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workers.hub")
    ends = [world.client(n)[1] for n in (1, 2)]
    assert all(parked(c) for c in world.hub.clients.values())

    async def stop() -> None:
        done = asyncio.ensure_future(world.hub.shutdown(60))
        for far in ends:
            assert await world.loop.sock_recv(far, 100) == b"OUTAGE\n"
            assert await world.loop.sock_recv(far, 100) == b""
        await asyncio.wait_for(done, TIMEOUT)

    world.loop.run_until_complete(stop())
    assert "forcing close" not in caplog.text


class Mover:
    """Another worker: keeps a copy of each descriptor it is given."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def send(self, to: int, group: list[tuple[int, object]]) -> list[bool]:
        self.fds += [os.dup(fd) for fd, _ in group]
        return [True] * len(group)


def test_a_parked_client_moves_without_a_transport(world: World) -> None:
    client, far = world.client()
    mover = Mover()
    world.hub.can_move(mover)  # type: ignore[arg-type]
    assert client.movable(client.key + 100)
    world.hub.moving = {1: [(client, 7)]}
    world.hub.send_moving()
    assert world.hub.lot is not None and len(world.hub.lot) == 0
    world.run_until(lambda: not world.hub.connections(), "the moved client is lost here")
    assert world.drops() == []  # it lives on at the other worker
    (fd,) = mover.fds
    with socket.socket(fileno=fd) as moved:  # the other worker's copy still reaches it
        moved.send(b"MSG moved\n")
    assert world.read_line(far) == b"MSG moved\n"


def test_a_client_being_promoted_does_not_move(world: World) -> None:
    far = world.connect(small=True)
    world.run_until(lambda: len(world.hub.clients) == 1, "the client is attached")
    (client,) = world.hub.clients.values()
    world.hub.from_matchmaker([[m.Welcome(client.key, 5, 1)]])
    client.write_now(b"MSG " + b"x" * 299_995 + b"\n")  # not taken whole: promoted
    assert not client.movable(5)
    world.read(far)


def test_a_promotion_that_fails_loses_the_client(
    listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="matchmaker.drops")
    loop = asyncio.new_event_loop()
    try:
        world = World(loop, listener)
        client, far = world.client()

        async def broken(*args: object, **kwargs: object) -> None:
            raise OSError("no transport today")

        loop.connect_accepted_socket = broken  # type: ignore[method-assign]
        far.send(b"PING\n")
        world.run_until(lambda: not world.hub.connections(), "the client is lost")
        assert world.drops() == [m.Drop(client.key + 100, client.key)]
        assert "no transport today" in caplog.text
        world.finish()
    finally:
        loop.close()
