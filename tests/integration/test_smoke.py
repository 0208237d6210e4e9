import pytest

from tests.integration.harness import pair

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_two_clients_on_two_workers_chat(server):
    a, b = server.client(), server.client()
    assert (a.id, b.id) == (1, 2)
    assert {server.worker_of(a), server.worker_of(b)} == {1, 2}
    pair(a, b)
    a.send("hello")
    b.expect("MSG hello")
    b.send("#GOODBYE#")
    b.expect("ENDED 1")
    a.expect("ENDED 2")


def test_the_asyncio_loop_serves_too(start_server):
    """uvloop is the default where installed; asyncio's own loop must work the same."""
    server = start_server("--loop", "asyncio")
    a, b = server.client(), server.client()
    assert server.worker_of(a) != server.worker_of(b)
    pair(a, b)
    a.send("hello")
    b.expect("MSG hello")
    b.send("#CLOSE#")
    b.expect("BYE")
    a.expect(f"ENDED {b.id}")
