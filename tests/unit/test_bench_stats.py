"""The benchmark's pure parts: percentiles, pairing by placement, ratios and targets."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

from scripts.bench import (
    REF,
    Row,
    add_ratios,
    fmt,
    json_destination,
    latencies_ms,
    median_run,
    parse_args,
    percentile,
    targets,
)
from scripts.benchload import parse_fields, plan_pairs


def test_percentile_is_nearest_rank():
    xs = list(range(1, 101))  # 1..100
    assert percentile(xs, 50) == 50
    assert percentile(xs, 99) == 99
    assert percentile(xs, 99.9) == 100
    assert percentile(xs, 100) == 100
    assert percentile([7], 50) == 7
    assert percentile([7], 99.9) == 7


def test_percentile_of_few_samples_is_a_measured_value():
    xs = [1.0, 2.0, 10.0]
    assert percentile(xs, 50) == 2.0
    assert percentile(xs, 99) == 10.0
    assert percentile(xs, 1) == 1.0


def test_percentile_edges():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1], 0)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_latencies_sort_and_convert_to_ms():
    got = latencies_ms([3_000_000, 1_000_000, 2_000_000], (50, 99))
    assert got == {50: 2.0, 99: 3.0}


def test_same_pairs_stay_in_a_group_and_spread_over_groups():
    groups = [1, 2, 1, 2, 1, 2, 1, 2]  # round robin over two workers
    pairs = plan_pairs(groups, 4, "same")
    assert pairs == [(0, 2), (1, 3), (4, 6), (5, 7)]
    for a, b in pairs:
        assert groups[a] == groups[b]


def test_cross_pairs_span_two_groups():
    groups = [1, 2, 1, 2]
    pairs = plan_pairs(groups, 2, "cross")
    assert pairs is not None and len(pairs) == 2
    for a, b in pairs:
        assert groups[a] != groups[b] and a < b


def test_impossible_placements_are_none():
    assert plan_pairs([1, 2], 1, "same") is None  # one client on each worker
    assert plan_pairs([1, 1, 1, 1], 1, "cross") is None  # a single process
    assert plan_pairs([1, 2, 3, 4], 1, "same") is None  # a process per client
    assert plan_pairs([1, 1, 2, 2], 2, "same") == [(0, 1), (2, 3)]
    with pytest.raises(ValueError):
        plan_pairs([1, 1], 1, "mixed")


def test_parse_fields():
    assert parse_fields("R ops=10 lost=0 pair_min=3") == {"ops": 10, "lost": 0, "pair_min": 3}


def row(server, metric, value, placement="same", workload="pingpong", size=32, **run):
    return Row(workload, size, placement, server, metric, value, "x", dict(run), first=True)


def test_ratios_to_ref_and_to_same():
    rows = [
        row(REF, "rate", 100.0),
        row("w2", "rate", 300.0),
        row("w2", "rate", 240.0, placement="cross"),
        row(REF, "rss", 10.0, placement="-", workload="conns", size=10000),
        row("w2", "rss", 20.0, placement="-", workload="conns", size=10000),
    ]
    add_ratios(rows)
    assert rows[0].ratio_ref is None
    assert rows[1].ratio_ref == 3.0 and rows[1].ratio_same is None
    assert rows[2].ratio_ref == 2.4 and rows[2].ratio_same == 0.8
    assert rows[4].ratio_ref == 2.0


def test_targets_pass_fail_and_unmeasured():
    rows = [
        row(REF, "rate", 100.0),
        row("w2", "rate", 300.0),
        row("w2", "rate", 200.0, placement="cross"),
        row("w2", "p99", 4.0),
        row("w2", "p99", 6.0, placement="cross"),
    ]
    add_ratios(rows)
    got = {(t.goal, t.measured): t.ok for t in targets(rows, "w2")}
    assert got[("pingpong 32 rate >= 3.0x ref", "same: 3.00x")] is True
    assert got[("pingpong 32 rate >= 3.0x ref", "cross: 2.00x")] is False
    assert got[("pingpong 32 p99 < 5 ms", "same: 4 x")] is True
    assert got[("pingpong 32 p99 < 5 ms", "cross: 6 x")] is False
    assert got[("pingpong 32 cross >= 0.8x same", "0.67x")] is False
    assert got[("pingpong 256 rate >= 3.0x ref", "not measured")] is None
    assert got[("every line arrived, in order (all servers, all runs)", "yes")] is True


def test_targets_flag_lost_lines():
    rows = [row(REF, "rate", 1.0, lost=0), row("w2", "rate", 1.0, lost=2)]
    (last,) = [t for t in targets(rows, "w2") if t.goal.startswith("every line")]
    assert last.ok is False and "w2 pingpong 32 same" in last.measured


def test_fmt():
    assert fmt(12345.6) == "12,346"
    assert fmt(123.4) == "123"
    assert fmt(12.34) == "12.3"
    assert fmt(1.234) == "1.23"
    assert fmt(0.01234) == "0.0123"
    assert fmt(0) == "0"
    assert fmt(math.nan) == "n/a"


def test_median_run_keeps_the_middle_run_and_sums_correctness():
    runs = []
    for value, lost in ((30.0, 0), (10.0, 1), (20.0, 0)):
        run = {"lost": lost, "out_of_order": 0, "errors": 0}
        runs.append([row("w2", "rate", value, **run), row("w2", "p50", value / 10, **run)])
    for rows in runs:  # a run's rows share one dict, as measure() makes them
        rows[1].run = rows[0].run
    chosen = median_run(runs)
    assert [r.value for r in chosen] == [20.0, 2.0]
    assert chosen[0].run["lost"] == 1 and chosen[1].run["lost"] == 1
    assert chosen[0].run["repeats"] == [30.0, 10.0, 20.0]
    single = [[row("w2", "rate", 5.0, lost=0)]]
    assert median_run(single) == single[0] and "repeats" not in single[0][0].run


def test_json_lines_go_where_asked_to_stdout_when_piped_and_nowhere_on_a_terminal():
    """On a terminal the JSON lines (~800 characters each) buried the table."""
    assert json_destination(None, terminal=True) is None
    assert json_destination(None, terminal=False) == "-"
    assert json_destination(Path("-"), terminal=True) == "-"
    assert json_destination(Path("b.json"), terminal=True) == Path("b.json")
    assert json_destination(Path("b.json"), terminal=False) == Path("b.json")
    assert parse_args(["--out", "b.json"]).json == Path("b.json")


def test_help_states_each_default_once():
    """``--help`` once said ``(default 3) (default: None)``."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        parse_args(["--help"])
    options = re.split(r"\n  (?=-)", text.getvalue())
    assert len(options) > 20
    for option in options:
        assert " ".join(option.split()).count("default") <= 1, option
