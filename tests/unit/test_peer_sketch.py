"""ipc.peers.cells: where an address counts in each row of a worker's sketch."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from ipc.peers import ROWS, WIDTH, address_key, cells

keys = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=8, max_size=8))


@given(keys)
def test_each_row_gets_one_counter_of_its_own(key: bytes) -> None:
    found = cells(key)
    assert len(found) == ROWS
    assert [index // WIDTH for index in found] == list(range(ROWS))
    assert cells(key) == found


@given(st.binary(min_size=4, max_size=4))
def test_an_ipv4_key_and_the_ipv6_prefix_of_the_same_number_count_apart(key: bytes) -> None:
    assert cells(key) != cells(key + bytes(4))


def test_addresses_spread_evenly_over_every_row() -> None:
    """65,536 neighbouring addresses over 8,192 counters: 8 each on average, and as a
    random choice would put them (the fullest of 8,192 such counters holds about 22)."""
    rows: list[Counter[int]] = [Counter() for _ in range(ROWS)]
    for i in range(65_536):
        for row, index in enumerate(cells(address_key(f"10.7.{i >> 8}.{i & 255}"))):
            rows[row][index] += 1
    for counts in rows:
        assert len(counts) >= WIDTH - 20
        assert max(counts.values()) <= 30


def test_the_rows_are_not_the_same_hash() -> None:
    """Two addresses that share one row's counter rarely share another's."""
    both = 0
    seen: dict[int, int] = {}
    for i in range(20_000):
        first, second, *_ = cells(address_key(f"192.168.{i >> 8 & 255}.{i & 255}"))
        if seen.get(first) == second:
            both += 1
        seen[first] = second
    assert both < 20
