"""matchmaker.service.address: a client's worker and key, in one int, and back."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from matchmaker.service import WORKER_BITS, address, key_of, worker_of

workers = st.integers(min_value=0, max_value=(1 << WORKER_BITS) - 1)
keys = st.integers(min_value=1, max_value=1 << 62)


@given(workers, keys)
def test_the_worker_and_the_key_come_back(worker: int, key: int) -> None:
    addr = address(worker, key)
    assert (worker_of(addr), key_of(addr)) == (worker, key)


@given(workers, keys, workers, keys)
def test_two_clients_share_an_address_only_if_they_share_worker_and_key(
    w1: int, k1: int, w2: int, k2: int
) -> None:
    assert (address(w1, k1) == address(w2, k2)) == ((w1, k1) == (w2, k2))


def test_an_address_is_smaller_than_the_tuple_it_replaced() -> None:
    worker, key = 1, 10_000_000  # a worker's ten millionth connection
    assert sys.getsizeof(address(worker, key)) <= 32
    assert sys.getsizeof((worker, key)) + sys.getsizeof(key) >= 80


def test_a_matchmaker_refuses_more_workers_than_an_address_can_name() -> None:
    import pytest

    from matchmaker.service import Matchmaker
    from matchmaker.table import ClientTable

    with pytest.raises(ValueError, match="workers"):
        Matchmaker(ClientTable(), [None] * ((1 << WORKER_BITS) + 1))  # type: ignore[list-item]
