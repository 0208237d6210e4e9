"""The supervisor's heartbeat check against real child processes and a shared WorkerLoad."""

from __future__ import annotations

import signal
import time

import pytest

from ipc.load import WorkerLoad
from matchmaker.config import Config, parse_args
from matchmaker.roles import WORKER, Spawn
from matchmaker.supervisor import BEAT_CHECK, Child, Supervisor, describe_exit

TIMEOUT = 2.0


@pytest.fixture
def supervisor():
    sup = Supervisor(Config(workers=2, worker_timeout=TIMEOUT))
    sup.load = WorkerLoad(sup.ctx, 2)
    for slot in range(2):
        process = sup.ctx.Process(target=time.sleep, args=(60,), name=f"worker {slot + 1}")
        process.start()
        spawn = Spawn(f"worker {slot + 1}", WORKER, sup.config, sup.load, slot=slot)
        sup.children.append(Child(process, spawn))
    sup._checked = time.monotonic()
    yield sup
    for child in sup.children:
        child.process.kill()
        child.process.join()


def test_a_worker_silent_past_the_timeout_is_killed_with_its_cause(supervisor, caplog):
    now = time.monotonic()
    supervisor.load.beat[0] = now - TIMEOUT - 1.0  # stuck
    supervisor.load.beat[1] = now  # beating
    supervisor.kill_silent_workers()
    stuck, fine = supervisor.children
    stuck.process.join(10)
    assert stuck.process.exitcode == -signal.SIGKILL
    assert fine.alive
    assert describe_exit(stuck.process.exitcode, stuck.cause).startswith(
        "killed by SIGKILL: event loop silent for 3.0s (--worker-timeout 2)"
    )
    assert "worker 1: event loop silent for" in caplog.text
    assert supervisor.load.beat[0] == 0.0  # killed once, not again at every check


def test_a_worker_that_has_not_beaten_yet_is_starting_not_stuck(supervisor):
    supervisor.kill_silent_workers()
    assert all(c.alive for c in supervisor.children)


def test_after_the_supervisor_itself_was_stopped_the_workers_get_a_round(supervisor):
    """Ctrl-Z stops the whole group: on SIGCONT every beat looks old, none is stuck."""
    supervisor._checked = time.monotonic() - BEAT_CHECK - 5.0
    for slot in range(2):
        supervisor.load.beat[slot] = time.monotonic() - TIMEOUT - 5.0
    supervisor.kill_silent_workers()
    assert all(c.alive for c in supervisor.children)


def test_the_worker_timeout_flag_refuses_less_than_four_beats():
    assert parse_args(["--worker-timeout", "1"]).worker_timeout == 1.0
    with pytest.raises(SystemExit):
        parse_args(["--worker-timeout", "0.5"])


def test_a_kill_for_another_reason_keeps_the_memory_hint():
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL (perhaps out of memory?)"
