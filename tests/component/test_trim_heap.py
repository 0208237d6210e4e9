"""matchmaker.proc.trim_heap: the C heap's free pages leave the process's RSS."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: 40 MB in blocks of 2 kB (past the interpreter's small-object allocator, so from the C
#: heap); every 16th kept, so that the heap's free top cannot simply shrink.
PROBE = """
from matchmaker.proc import trim_heap

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

blocks = [bytes(2048) for _ in range(20_000)]
kept = blocks[::16]
del blocks
before = anon_kb()
trim_heap()
print(before, anon_kb(), len(kept))
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
    reason="glibc's malloc_trim, read in /proc",
)
def test_the_free_pages_inside_the_heap_go_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, after, _ = map(int, out.stdout.split())
    assert before - after > 20_000  # kB: of 37.5 MB freed, most pages hold no kept block


def test_the_supervisor_trims_before_each_fork() -> None:
    """A source check: the fork happens in ``matchmaker.forking.start``, and the trim
    comes before the handled signals are blocked (nothing it raises can leave them so)."""
    import inspect

    from matchmaker import forking

    source = inspect.getsource(forking.start)
    trim = source.index("trim_heap()")
    assert trim < source.index("SIG_BLOCK") < source.index("process.start()")


def test_without_ctypes_nothing_is_trimmed_and_nothing_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from matchmaker.proc import trim_heap

    monkeypatch.setitem(sys.modules, "ctypes", None)  # import ctypes raises ImportError
    trim_heap()
