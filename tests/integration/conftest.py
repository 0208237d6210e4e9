"""Fixtures that start the real server: ``server`` (2 workers) and ``start_server`` (any flags);
and ``redis_server``, a real Redis for the cluster mode (``--redis``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.harness import Server
from tests.redis_server import RedisServer, require_redis_server


@pytest.fixture
def start_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []
    relayed = (
        "placement" in request.fixturenames and request.getfixturevalue("placement") == "relayed"
    )

    def start(*args: str, workers: int = 2, **options: Any) -> Server:
        if relayed:  # sessions across workers stay there, relayed through the matchmaker
            args = (*args, "--migrate", "off")
        server = Server(*args, workers=workers, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(params=["same", "cross", "relayed"])
def placement(request: pytest.FixtureRequest) -> str:
    """Peers on the same worker, or on two (one moves to the other's when they pair, or,
    ``relayed``, with ``--migrate off``, both stay and the matchmaker relays their lines)."""
    return str(request.param)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started, empty Redis on its own port; skipped without redis-server (failed on CI)."""
    server = RedisServer(require_redis_server())
    yield server
    server.close()
