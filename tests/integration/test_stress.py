"""Hundreds of random clients on two workers, their transcripts checked against every rule.

The clients (``scripts.loadgen``) race on purpose: they chat while a partner
leaves, send commands while a CONNECTED is on its way, reconnect and get old
ids back. ``scripts.rules.check`` replays every transcript against the
protocol and ties the sessions together; tests/unit/test_rules.py shows it
names each rule broken on purpose.
"""

from __future__ import annotations

import asyncio

import pytest

from scripts.loadgen import Plan, load
from scripts.rules import check
from scripts.sampler import Sampler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

PLAN = Plan(clients=200, ops=40, seed=20261125, duration=45.0)


def test_random_clients_keep_every_rule(start_server):
    server = start_server(workers=2)  # round-robin: neighbours land on different workers
    sampler = Sampler(server.proc.pid, interval=0.05, ports=True)
    sampler.start()
    try:
        result = asyncio.run(load(server.host, server.port, PLAN))
    finally:
        sampler.stop()
    report = check(result.transcripts)
    assert report.violations == [], "\n".join(map(str, report.violations[:40]))
    assert report.cut == 0, report.errors
    worker = {uid: sampler.placement.get(port) for uid, port in result.ports.items()}
    placed = [(worker[a], worker[b]) for a, b in report.pairs if worker[a] and worker[b]]
    across = sum(1 for wa, wb in placed if wa != wb)
    # enough happened for the rules to mean something, on both workers and between them
    assert report.connections >= 400
    assert report.sessions >= 400
    assert report.messages >= 5000
    assert across >= 100, (across, len(placed))
    assert {"BUSY", "OFFLINE", "UNKNOWN_COMMAND", "NOT_IN_CHAT"} <= set(report.errors)
