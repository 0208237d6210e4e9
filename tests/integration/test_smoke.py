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
