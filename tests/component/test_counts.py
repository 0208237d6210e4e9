"""What a process counts for the metrics (``ipc.counts``), how the supervisor sums the
reports (``Totals``), the drop reasons of a refusal, and the JSON log format."""

from __future__ import annotations

import json
import logging
import pickle
import socket

from ipc import counts
from ipc import messages as m
from ipc.counts import COUNTS, Counts, Totals
from matchmaker.drops import Reason
from matchmaker.logs import JsonFormatter
from tests.component.test_connection import LIMITS, Effects, client, out, pair, type_
from wire.dialects import LINE
from wire.errors import ErrorCode
from wire.replies import Bye, Error, Outage
from workers.connection import Connection
from workers.hub import refusal


def lines() -> list[int]:
    return list(COUNTS.lines)


def test_each_line_is_counted_once_by_its_path():
    before, sessions = lines(), COUNTS.sessions
    a, _ = client(key=1, cid=5)
    b, _ = client(key=2, cid=6)
    pair(b, 10, 5, here=a)
    pair(a, 10, 6, here=b, requested=True)
    type_(a, b"one\ntwo\n")
    far, _ = client(key=3, cid=7)
    pair(far, 11, 8, requested=True)  # its partner is on another worker
    type_(far, b"three\n")
    remote, _ = client(key=4, cid=9)
    pair(remote, 12, 1, requested=True, peer_worker=-1)  # on another host
    type_(remote, b"four\n")
    after = lines()
    assert [x - y for x, y in zip(after, before, strict=True)] == [2, 0, 1, 1]
    assert COUNTS.sessions - sessions == 3  # the end that asked counts it


def test_lines_of_a_session_one_end_moved_for_are_counted_as_moved():
    before = lines()
    mover, _ = client(key=3, cid=100)
    type_(mover, b"CONNECT 6\n")
    state = pickle.loads(pickle.dumps(mover.export(9, now=4.0)))
    mover.moved()
    there = Connection.arriving(8, state, LINE, LIMITS, Effects(), now=10.0)
    partner, _ = client(key=2, cid=6)
    pair(partner, 9, 100, here=there)
    pair(there, 9, 6, here=partner, requested=True)
    there.drain()
    type_(partner, b"hi\n")
    type_(there, b"hello\n")
    assert out(partner).endswith(b"MSG hello\n")
    assert lines()[counts.MOVED] - before[counts.MOVED] == 2
    assert lines()[counts.SAME_WORKER] == before[counts.SAME_WORKER]


def test_errors_are_counted_by_code():
    before = dict(COUNTS.errors)
    conn, _ = client()
    type_(conn, b"CONNECT\nnonsense\n#GOODBYE#\n")
    conn.request = m.Get(5, False, 1)
    conn.answer(Error(ErrorCode.BUSY, "3"))
    got = {k: COUNTS.errors[k] - before.get(k, 0) for k in COUNTS.errors}
    assert {k: v for k, v in got.items() if v} == {
        "USAGE": 1,
        "UNKNOWN_COMMAND": 1,
        "NOT_IN_CHAT": 1,
        "BUSY": 1,
    }


def test_a_refusal_names_its_reason():
    assert refusal(Bye()) is None  # the client's own #CLOSE#: no drop
    assert refusal(Error(ErrorCode.FULL)) is Reason.FULL
    assert refusal(Error(ErrorCode.UNAVAILABLE)) is Reason.UNAVAILABLE
    assert refusal(Outage()) is Reason.OUTAGE


def test_reports_go_when_something_changed_and_carry_totals():
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with mine, theirs:
        c = Counts()
        assert c.report(mine, force=True)
        c.lines[counts.RELAYED] += 2
        c.drops["idle"] += 1
        assert not c.report(mine)  # not due yet
        c._at -= counts.REPORT_INTERVAL
        assert c.report(mine)
        c._at -= counts.REPORT_INTERVAL
        assert not c.report(mine)  # nothing changed
        totals = Totals()
        totals.take("worker 1", theirs.recv(4096))
        totals.take("worker 1", theirs.recv(4096))
    assert totals.view == ({"lines:relayed": 2, "drops:idle": 1}, {})
    assert totals.heard == {"worker 1"}


def test_a_dead_process_keeps_its_counts_and_loses_its_gauges():
    def report(counters: dict[str, int], gauges: dict[str, int]) -> bytes:
        return json.dumps({"counters": counters, "gauges": gauges}).encode()

    totals = Totals()
    totals.take("worker 1", report({"moves": 2}, {}))
    totals.take("matchmaker", report({}, {"sessions_active": 4}))
    totals.ended("worker 1")
    totals.ended("matchmaker")
    totals.take("worker 1", report({"moves": 1}, {}))  # its replacement starts from 0
    totals.take("matchmaker", report({}, {"sessions_active": 3}))
    totals.take("acceptor", b"no report")
    assert totals.view == ({"moves": 3}, {"sessions_active": 3})
    assert totals.heard == {"worker 1", "matchmaker"}


def test_a_json_log_record_is_one_line_with_its_fields():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    record.reason = "idle"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    doc = json.loads(text)
    assert (doc["message"], doc["reason"], doc["level"]) == ("a b", "idle", "INFO")
    assert "ValueError: boom" in doc["exception"]
