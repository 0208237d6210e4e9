"""The supervisor's restart policy, with real children that die as soon as they start.

A child that dies after it booted is restarted every time, at once at first and
then after a pause that doubles up to a second; one that fails while booting
(exit status BOOT_ERROR) stops the server.
"""

from __future__ import annotations

import sys
import time

import pytest

from ipc.load import WorkerLoad
from matchmaker.config import Config
from matchmaker.roles import BOOT_ERROR, Spawn
from matchmaker.supervisor import BACKOFF_MAX, QUICK_RESTARTS, Supervisor, restart_delay

WAIT = 10.0


def main(spawn: Spawn) -> None:
    """The role these children play: exit with the status their title says."""
    sys.exit(int(spawn.title.split()[-1]))


@pytest.fixture
def supervisor():
    sup = Supervisor(Config(workers=1))
    sup.load = WorkerLoad(sup.ctx, 1)
    yield sup
    for child in sup.children:
        if child.alive:
            child.process.kill()
        child.process.join()


def died(sup: Supervisor) -> None:
    for child in sup.children:
        child.process.join(WAIT)
        assert not child.alive


def test_restarts_are_at_once_then_back_off_to_a_second():
    delays = [restart_delay(deaths) for deaths in range(1, 12)]
    assert delays == [0.0] * QUICK_RESTARTS + [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert restart_delay(1000) == BACKOFF_MAX


def test_a_child_that_keeps_dying_is_restarted_every_time(supervisor, caplog):
    """Six deaths within 30 s used to halt the server, with OUTAGE to every client."""
    child = supervisor.spawn(Spawn("dies with 1", __name__, supervisor.config, supervisor.load))
    pids = set()
    for deaths in range(1, 10):
        died(supervisor)
        pids.add(child.process.pid)
        before = time.monotonic()
        assert supervisor.handle_deaths()
        assert child.due is not None
        assert before <= child.due - restart_delay(deaths) <= time.monotonic()
        assert supervisor.handle_deaths()  # a death is handled once
        child.due = min(child.due, time.monotonic())  # no need to wait it out here
        supervisor.restart_due()
        assert child.due is None
    assert len(pids) == 9
    assert "dies with 1 died 6 times in 30 s; restarting it in 0.1 s" in caplog.text
    assert "dies with 1 died 9 times in 30 s; restarting it in 0.8 s" in caplog.text


def test_a_child_that_fails_to_boot_stops_the_server(supervisor, caplog):
    supervisor.spawn(
        Spawn(f"fails with {BOOT_ERROR}", __name__, supervisor.config, supervisor.load)
    )
    died(supervisor)
    assert not supervisor.handle_deaths()
    assert "fails with 3 failed to start (its log above says why); stopping the server" in (
        caplog.text
    )
    assert all(child.due is None for child in supervisor.children)  # nothing restarts
