"""wire.budget: token buckets on a clock driven by hand.

Two properties hold whatever the pattern of demand: nothing is admitted
beyond ``rate * t + burst`` (plus, for bytes, the one line paid after it was
taken), and a client that waits as long as ``due`` says is allowed a line:
it never stalls while tokens accrue.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.budget import Budget, Pace, TokenBucket


def test_a_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=100.0)
    assert [bucket.take(1, 100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.due(1, 100.0) == pytest.approx(0.5)
    assert not bucket.take(1, 100.4)
    assert bucket.take(1, 100.5)
    assert bucket.level(200.0) == 3.0  # never above its burst
    assert bucket.full(200.0)


def test_an_overdraft_is_paid_back_before_anything_more() -> None:
    bucket = TokenBucket(rate=10.0, burst=10.0, now=0.0)
    bucket.spend(25, 0.0)
    assert bucket.level(0.0) == -15
    assert bucket.due(0, 0.0) == pytest.approx(1.5)
    assert not bucket.take(1, 1.5)
    assert bucket.take(1, 1.6)


def test_a_bucket_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0.0, 0.0)


def test_rate_zero_means_no_budget() -> None:
    assert Pace.of(0, 60, 4096) is None


def test_the_defaults_let_a_paste_of_a_few_dozen_lines_through_at_once() -> None:
    pace = Pace.of(20, 60, 4096)
    assert pace is not None
    budget = Budget(pace, 0.0)
    taken = 0
    for _ in range(48):  # 48 lines of 80 characters, all read at the same instant
        assert budget.allowance(0.0) >= 1
        budget.spend(1, 81, 0.0)
        taken += 1
    assert taken == 48


def test_short_lines_go_at_the_line_rate_and_long_ones_at_a_quarter_of_it() -> None:
    pace = Pace.of(20, 20, 4096)
    assert pace is not None
    short, long = Budget(pace, 0.0), Budget(pace, 0.0)
    assert lines_in(short, 10, 10.0) == pytest.approx(20 * 10 + 20, abs=2)
    assert lines_in(long, 4098, 10.0) == pytest.approx((20 * 10 + 20) / 4, abs=2)


def lines_in(budget: Budget, size: int, seconds: float) -> int:
    """Lines of ``size`` bytes a client that always has more to send gets in ``seconds``."""
    now, taken = 0.0, 0
    while now <= seconds:
        n = budget.allowance(now)
        if n:
            budget.spend(n, n * size, now)
            taken += n
        else:
            now += budget.due(now)
    return taken


def test_while_bytes_are_short_lines_come_one_at_a_time() -> None:
    pace = Pace(rate=100.0, burst=100, byte_rate=1000.0, byte_burst=5000.0, cost=1000)
    budget = Budget(pace, 0.0)
    assert budget.allowance(0.0) == 5
    budget.spend(5, 4500, 0.0)
    assert budget.allowance(0.0) == 1  # 500 bytes left: one more line, paid after
    budget.spend(1, 1000, 0.0)
    assert budget.allowance(0.0) == 0
    assert budget.due(0.0) == pytest.approx(0.5)


def test_a_budget_that_moves_keeps_what_it_held_and_earns_nothing_in_flight() -> None:
    pace = Pace.of(10, 10, 4096)
    assert pace is not None
    budget = Budget(pace, 50.0)
    budget.spend(10, 100, 50.0)
    budget.settle(50.5)  # five lines earned by the time it leaves
    budget.rebase(7.0)  # another worker, another loop's time
    assert budget.lines.level(7.0) == 5


# ---- properties ------------------------------------------------------------------------

#: A client's demand: (seconds since the last attempt, bytes of each line it would send).
demand = st.lists(st.tuples(st.floats(0, 2.0, allow_nan=False), st.integers(1, 300)), max_size=200)
paces = st.builds(
    Pace.of,
    rate=st.floats(0.5, 500, allow_nan=False),
    burst=st.integers(1, 200),
    max_line=st.integers(16, 512),
)


@given(paces, demand)
def test_nothing_beyond_rate_times_t_plus_burst_is_admitted(pace: Pace, steps: list) -> None:
    start = 1000.0
    budget = Budget(pace, start)
    now, lines, nbytes = start, 0, 0
    for gap, size in steps:
        now += gap
        size = min(size, pace.cost)
        n = budget.allowance(now)
        if n:
            budget.spend(n, n * size, now)
            lines += n
            nbytes += n * size
        t = now - start
        assert lines <= pace.rate * t + pace.burst + 1e-6
        assert nbytes <= pace.byte_rate * t + pace.byte_burst + pace.cost + 1e-6


@given(paces, demand)
def test_waiting_as_long_as_due_says_always_allows_a_line(pace: Pace, steps: list) -> None:
    now = 5.0
    budget = Budget(pace, now)
    for gap, size in steps:
        now += gap
        n = budget.allowance(now)
        if n:
            budget.spend(n, n * min(size, pace.cost), now)
        wait = budget.due(now)
        assert wait <= max(1 / pace.rate, (pace.byte_burst + pace.cost) / pace.byte_rate) + 1e-6
        now += wait  # the client waits that long, and no longer
        assert budget.allowance(now) >= 1


@given(
    st.floats(0.1, 100, allow_nan=False),
    st.integers(1, 50),
    st.lists(st.floats(0, 1.0, allow_nan=False), max_size=300),
)
def test_a_bucket_admits_at_most_rate_times_t_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        taken += bucket.take(1, now)
        assert taken <= rate * now + burst + 1e-6
    now += bucket.due(1, now)
    assert bucket.take(1, now)
