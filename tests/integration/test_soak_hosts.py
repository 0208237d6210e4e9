"""``scripts/soak.sh --hosts 2``: two servers on a Redis of the soak's own, checked as one.

A short run with few users, as a subprocess, the way CI runs the soak: it must
exit 0, its checker must find no violation across the two hosts, and the
summary must show the Redis row beside the hosts' processes. Skipped like the
other Redis tests when redis-server is missing (failed on CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.redis_server import require_redis_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_soak_across_two_hosts_passes_and_shows_redis() -> None:
    require_redis_server()
    cmd = ["bash", "scripts/soak.sh", "--hosts", "2", "--duration", "5", "--clients", "20"]
    run = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=50, env=_env(), check=False
    )
    out = run.stdout
    report = f"exit {run.returncode}\n{out}\n{run.stderr[-3000:]}"
    # the summary's shape first: both hosts, Redis beside them, sessions across
    assert re.search(r"^h1 matchmaker: worker 1 ", out, re.M), report
    assert re.search(r"^h2 matchmaker: worker 1 ", out, re.M), report
    assert re.search(r"^redis-server +\d+\.\d MiB", out, re.M), report
    assert "redis memory: INFO used_memory" in out, report
    assert re.search(r"^sessions across hosts: [1-9]\d* of ", out, re.M), report
    # then the verdict
    assert re.search(r"^rule violations: 0 ", out, re.M), report
    assert "RESULT: PASS" in out, report
    assert run.returncode == 0, report
    assert "soak: " not in run.stderr, report  # piped: no progress lines


@pytest.mark.timeout(60)
def test_soak_on_a_terminal_shows_progress_each_second() -> None:
    """A minute of silence at the defaults: now a line a second, rewritten in place."""
    cmd = ["scripts/soak.sh", "--duration", "3", "--clients", "10", "--workers", "1"]
    child = pexpect.spawn(
        "bash", cmd, cwd=str(ROOT), env=_env(), encoding="utf-8", timeout=30, dimensions=(24, 200)
    )
    try:
        for second in (1, 2):
            child.expect(rf"\r\x1b\[Ksoak: +{second}/3 s  connections \d+  sessions \d+  "
                         r"lines sent \d+  relayed \d+  errors \d+  cut 0")  # fmt: skip
        child.expect(r"\r\nsoak: checking \d+ connections against the rules\r\n")
        child.expect_exact("RESULT: PASS")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def _env() -> dict[str, str]:
    """This interpreter first on PATH (soak.sh runs ``python``), the tree importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    return env
