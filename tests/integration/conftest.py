"""Fixtures that start the real server: ``server`` (2 workers) and ``start_server`` (any flags)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.harness import Server


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, workers: int = 2) -> Server:
        server = Server(*args, workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(params=["same", "cross"])
def placement(request: pytest.FixtureRequest) -> str:
    """Peers on the same worker, or on two different workers."""
    return str(request.param)
