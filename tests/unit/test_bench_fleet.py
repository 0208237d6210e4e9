"""The conns workload's fleet: clients split over helper processes and source addresses,
and the 100,000-client targets read off its rows."""

from __future__ import annotations

import pytest

from scripts.bench import HUNDRED_K, Row, targets
from scripts.benchload import (
    CONNS_PER_PROC,
    CONNS_PER_SOURCE,
    Share,
    plan_fleet,
    source_address,
)


def test_one_helper_from_the_default_address_while_it_fits():
    """10,000 clients are what one helper always opened, from 127.0.0.1."""
    assert plan_fleet(10_000) == [Share(10_000, "-")]
    assert plan_fleet(CONNS_PER_PROC) == [Share(CONNS_PER_PROC, "-")]


def test_100k_takes_eight_helpers_each_from_its_own_address():
    fleet = plan_fleet(100_000)
    assert fleet == [Share(12_500, f"127.0.0.{k}") for k in range(2, 10)]


def test_clients_are_split_evenly_the_first_helpers_one_more():
    fleet = plan_fleet(99_997, procs=8)
    assert [s.clients for s in fleet] == [12_500] * 5 + [12_499] * 3
    assert len(plan_fleet(100_001)) == 9  # no helper over CONNS_PER_PROC


def test_more_helpers_when_asked_and_never_more_than_clients():
    assert [s.clients for s in plan_fleet(10_000, procs=4)] == [2_500] * 4
    assert len(plan_fleet(3, procs=8)) == 3


def test_a_lower_descriptor_budget_takes_more_helpers():
    fleet = plan_fleet(100_000, per_proc=19_744)  # a hard limit of 20,000 less the margin
    assert len(fleet) == 6
    assert max(s.clients for s in fleet) <= 19_744


def test_fewer_addresses_are_dealt_in_turn_within_their_ports():
    fleet = plan_fleet(100_000, procs=8, sources=4)
    assert [s.source for s in fleet] == [f"127.0.0.{2 + k % 4}" for k in range(8)]
    per_source: dict[str, int] = {}
    for s in fleet:
        per_source[s.source] = per_source.get(s.source, 0) + s.clients
    assert max(per_source.values()) == 25_000 <= CONNS_PER_SOURCE


def test_too_few_addresses_for_their_ports_is_refused():
    with pytest.raises(ValueError, match="at least 4"):
        plan_fleet(100_000, procs=8, sources=3)
    with pytest.raises(ValueError, match="at least 2"):
        plan_fleet(30_000, procs=1, per_proc=30_000)  # one helper could, one address cannot


@pytest.mark.parametrize("clients,procs", [(0, 1), (10, 0)])
def test_nothing_to_split_is_refused(clients, procs):
    with pytest.raises(ValueError):
        plan_fleet(clients, procs)


def test_source_addresses_are_loopback_and_skip_127_0_0_1():
    assert source_address(0) == "127.0.0.2"
    assert source_address(253) == "127.0.0.255"
    assert source_address(254) == "127.0.1.0"
    with pytest.raises(ValueError):
        source_address(-1)


def conns_row(metric, value, unit, **run):
    return Row("conns", HUNDRED_K, "-", "w8", metric, value, unit, run, first=metric == "connect")


def test_the_100k_targets():
    run = {"errors": 0, "connected": HUNDRED_K, "entries": HUNDRED_K}
    rows = [
        conns_row("connect", 5.0, "s", **run),
        conns_row("connect rate", 20_000.0, "conn/s"),
        conns_row("get free p99", 99.0, "ms"),
        conns_row("pss", 400.0, "MB"),
    ]
    got = {t.goal: (t.measured, t.ok) for t in targets(rows, "w8")}
    assert got["conns 100000: every client WELCOMEd and listed"] == (
        "100,000 WELCOMEd, 0 failed, GET FREE listed 100,000",
        True,
    )
    assert got["conns 100000 connect rate >= 20,000 conn/s"] == ("20,000 conn/s", True)
    assert got["conns 100000 get free p99 < 100 ms"] == ("99.0 ms", True)
    assert got["conns 100000 pss < 400 MB"] == ("400 MB", False)


def test_one_client_without_its_welcome_fails_the_row():
    run = {"errors": 1, "connected": HUNDRED_K - 1, "entries": HUNDRED_K - 1}
    (t,) = [
        t for t in targets([conns_row("connect", 5.0, "s", **run)], "w8") if "WELCOME" in t.goal
    ]
    assert t.ok is False and t.measured == "99,999 WELCOMEd, 1 failed, GET FREE listed 99,999"
