"""The bare Redis connection of the lines' path (``matchmaker.resp``), against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from matchmaker import resp
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


@given(st.lists(st.one_of(st.binary(), st.text(), st.integers()), min_size=1, max_size=8))
def test_pack_is_an_array_of_bulk_strings(args: list[Any]) -> None:
    parser = hiredis.Reader()
    parser.feed(resp.pack(*args))
    as_bytes = [a.encode() if isinstance(a, str) else b"%d" % a if isinstance(a, int) else a
                for a in args]  # fmt: skip
    assert parser.gets() == as_bytes
    assert parser.gets() is False


def test_a_pipeline_gets_its_replies_in_order_errors_among_them(server: RedisServer) -> None:
    async def go() -> list[Any]:
        lane = await resp.connect(server.url)
        try:
            payload = resp.pack("SET", "k", "v") + resp.pack("INCR", "k") + resp.pack("GET", "k")
            return await lane.ask(payload, 3)
        finally:
            lane.abort()

    ok, refused, value = run(go())
    assert ok == b"OK"
    assert isinstance(refused, resp.ReplyError)
    assert str(refused).startswith("ERR value is not an integer")
    assert value == b"v"


def test_batches_sent_back_to_back_are_answered_each_to_its_own(server: RedisServer) -> None:
    async def go() -> list[list[Any] | None]:
        lane = await resp.connect(server.url)
        got: list[list[Any] | None] = []
        lane.send(resp.pack("DEL", "n"), 1, got.append)
        for _ in range(3):
            lane.send(resp.pack("INCR", "n") * 2, 2, got.append)
        await lane.ask(resp.pack("PING"), 1)
        lane.abort()
        return got

    assert run(go()) == [[0], [1, 2], [3, 4], [5, 6]]


def test_a_connection_that_ends_tells_every_waiting_batch(server: RedisServer) -> None:
    async def go() -> tuple[list[Any], BaseException | None]:
        lane = await resp.connect(server.url)
        got: list[Any] = []
        blocked = resp.pack("BLPOP", "nothing-comes", 0)
        lane.send(blocked, 1, got.append)
        lane.send(resp.pack("PING"), 1, got.append)
        killer = redis.Redis.from_url(server.url)
        killer.client_kill_filter(_type="normal", skipme=True)
        killer.close()
        why = await lane.closed
        with pytest.raises(ConnectionError):
            lane.send(resp.pack("PING"), 1, got.append)
        return got, why

    got, why = run(go())
    assert got == [None, None]
    assert isinstance(why, BaseException)


def test_the_url_gives_the_database_and_the_password() -> None:
    s = RedisServer()
    try:
        admin = redis.Redis.from_url(s.url)
        admin.config_set("requirepass", "s3cret")
        admin.close()
        url = f"redis://:s3cret@127.0.0.1:{s.port}/3"

        async def go() -> list[Any]:
            lane = await resp.connect(url)
            try:
                return await lane.ask(resp.pack("SET", "where", "db3"), 1)
            finally:
                lane.abort()

        assert run(go()) == [b"OK"]
        check = redis.Redis.from_url(url)
        assert check.get("where") == b"db3"
        check.close()
        with pytest.raises(ConnectionError, match="WRONGPASS|invalid"):
            run(resp.connect(f"redis://:wrong@127.0.0.1:{s.port}/0"))
    finally:
        s.close()


def test_not_redis_speaking_ends_the_lane() -> None:
    async def go() -> list[Any]:
        async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        lane = await resp.connect(f"redis://127.0.0.1:{port}/0")
        got: list[Any] = []
        lane.send(resp.pack("PING"), 1, got.append)
        await lane.closed
        srv.close()
        await srv.wait_closed()
        return got

    assert run(go()) == [None]


def test_only_redis_urls() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        run(resp.connect("http://127.0.0.1:1/"))
