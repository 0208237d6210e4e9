"""The Redis test helper itself: the cluster-mode tests rely on kill, restart-empty and pause
doing exactly that, so each is checked against the real process here."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest
import redis

from tests import redis_server as helper
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_starts_and_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.client().ping() is True
    assert redis_server.client().dbsize() == 0
    proc = psutil.Process(redis_server.pid)
    assert proc.name() == "redis-server"
    assert os.getpgid(proc.pid) == proc.pid  # its own group: signals to it spare pytest
    assert proc.ppid() == os.getpid()


def test_url_works_with_the_asyncio_client(redis_server: RedisServer) -> None:
    """The cluster mode connects by URL with redis.asyncio: the URL must mean this Redis."""
    import asyncio

    import redis.asyncio

    async def roundtrip() -> str | None:
        client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            await client.set("k", "v")
            return await client.get("k")
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == "v"
    assert redis_server.client().get("k") == "v"


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_restart_is_empty_on_the_same_port(redis_server: RedisServer, how: str) -> None:
    client = redis_server.client()
    client.set("before", "1")
    port, pid = redis_server.port, redis_server.pid
    old = psutil.Process(pid)

    getattr(redis_server, how)()
    assert not old.is_running()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()

    redis_server.start()
    assert redis_server.port == port
    assert redis_server.pid != pid
    assert client.get("before") is None  # the same client reconnects to the new, empty Redis
    assert client.dbsize() == 0


def test_pause_makes_redis_unreachable_and_resume_keeps_its_data(
    redis_server: RedisServer,
) -> None:
    redis_server.client().set("kept", "yes")
    redis_server.pause()
    assert psutil.Process(redis_server.pid).status() == psutil.STATUS_STOPPED
    with pytest.raises(redis.exceptions.TimeoutError):
        redis_server.client(socket_timeout=0.2).ping()

    redis_server.resume()
    assert redis_server.client(socket_timeout=0.2).ping() is True
    assert redis_server.client().get("kept") == "yes"


def test_close_leaves_no_process_and_no_directory() -> None:
    server = RedisServer(helper.require_redis_server())
    try:
        proc = psutil.Process(server.pid)
        directory = server.dir
        assert directory.is_dir()
        server.client().ping()

        server.close()
        assert not proc.is_running()
        assert not directory.exists()
    finally:
        server.close()  # idempotent: a no-op after the close above


def test_close_reaps_a_paused_redis() -> None:
    server = RedisServer(helper.require_redis_server())
    try:
        proc = psutil.Process(server.pid)
        server.pause()
        server.close()
        assert not proc.is_running()
    finally:
        server.close()


def test_start_moves_to_another_port_when_the_chosen_one_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """free_port() can race with another process; the helper retries on a fresh port."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    ports = iter([taken])
    real = helper.free_port
    monkeypatch.setattr(helper, "free_port", lambda: next(ports, None) or real())
    try:
        server = RedisServer(helper.require_redis_server())
        try:
            assert server.port != taken
            assert server.client().ping() is True
            assert "Address already in use" in server.log()
        finally:
            server.close()
    finally:
        holder.close()


def test_missing_redis_server_skips_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helper, "redis_server_path", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y redis-server"):
        helper.require_redis_server()


def test_missing_redis_server_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper, "redis_server_path", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        helper.require_redis_server()


def test_redis_server_path_finds_the_binary() -> None:
    path = helper.require_redis_server()
    assert Path(path).name == "redis-server"
