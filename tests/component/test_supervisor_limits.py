"""The supervisor's descriptor limit, set in a child process so the tests' own stays."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RAISE = """
import resource
from matchmaker.config import Config
from matchmaker.proc import setup_logging
from matchmaker.supervisor import Supervisor
setup_logging("INFO")
Supervisor(Config(max_clients={max_clients}, workers={workers})).raise_fd_limit()
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def raised(soft: int, hard: int, max_clients: int, workers: int = 1) -> tuple[list[int], str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", RAISE.format(max_clients=max_clients, workers=workers)],
        cwd=ROOT,
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [int(n) for n in done.stdout.split()], done.stderr


def test_the_soft_limit_goes_up_to_the_hard_one():
    """Raised only to --max-clients + 256, a worker with 10,000 clients and a burst
    of 3,000 more ran out of descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits, log = raised(min(1024, hard), hard, max_clients=100)
    assert limits == [hard, hard]
    assert "open-file limit" not in log


def test_a_hard_limit_below_max_clients_is_warned_about():
    limits, log = raised(512, 512, max_clients=10000)
    assert limits == [512, 512]
    assert (
        "open-file limit is 512, below the 10256 that each worker's share of "
        "--max-clients 10000 over --workers 1 needs" in log
    )


def test_the_limit_is_per_worker():
    """A host whose processes may hold 20,000 descriptors each holds 100,000 clients
    over 8 workers (12,756 each), not over 4 (25,256 each)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard_limit = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    limits, log = raised(1024, hard_limit, max_clients=8 * (hard_limit - 256), workers=8)
    assert limits == [hard_limit, hard_limit]
    assert "open-file limit" not in log
    _, log = raised(1024, hard_limit, max_clients=8 * (hard_limit - 256), workers=4)
    need = 2 * (hard_limit - 256) + 256
    assert f"open-file limit is {hard_limit}, below the {need} that each worker's share" in log
