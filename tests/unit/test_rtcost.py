"""The pure pieces of ``scripts/rtcost.py``: reading ``perf stat -x,`` and the per-trip sums."""

from __future__ import annotations

import math

from scripts.rtcost import Cost, median_run, parse_perf, per_trip

PERF = """\
# started on Wed Dec  2 04:40:00 2026

412345,,raw_syscalls:sys_enter,2000123456,100.00,,
777,,context-switches,2000123456,100.00,0.388,K/sec
<not supported>,,cycles,0,100.00,,
"""


def test_perf_counts_are_read_by_event_and_the_rest_left_out() -> None:
    assert parse_perf(PERF) == {"raw_syscalls:sys_enter": 412345.0, "context-switches": 777.0}


def test_an_event_perf_could_not_count_is_missing_not_zero() -> None:
    text = "<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"
    assert parse_perf(text) == {}


def test_per_trip_divides_by_the_trips_of_the_window() -> None:
    assert per_trip(400_000, rate=50_000, seconds=2.0) == 4.0
    assert math.isnan(per_trip(10, rate=0, seconds=2.0))


def cost(rate: float, user: float) -> Cost:
    return Cost(rate=rate, syscalls=4.0, switches=0.0, user_us=user, kernel_us=10.0)


def test_the_median_run_is_one_real_run() -> None:
    runs = [cost(60_000, 3.0), cost(50_000, 4.0), cost(70_000, 2.0)]
    assert median_run(runs) == cost(60_000, 3.0)
    assert median_run(runs[:2]) == cost(50_000, 4.0)  # of two, the slower
    assert median_run(runs).cpu_us == 13.0
