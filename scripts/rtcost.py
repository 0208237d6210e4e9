"""What one pingpong round trip costs each server: system calls, task switches, user and kernel CPU.

``python scripts/rtcost.py [--servers w1,w2,inspircd] [--pairs 32] [--duration 4] [--repeat 3]``

The bench's ``rt/cpu-s`` says how much work a server does per CPU-second; this
says where that CPU goes, per round trip, over every process of the server:
the user time (the server's own code: Python and uvloop, or C), the kernel
time (TCP over loopback, waking the reader), the system calls (counted by
``perf stat`` on the tracepoint ``raw_syscalls:sys_enter``; ``n/a`` without
perf) and the task switches. Each server is started as ``scripts/bench.py``
starts it (``wN``: ``python -m matchmaker --workers N`` with its flags; a
peer: ``scripts/ircpeers.py``), gets ``--pairs`` pairs (ours: in sessions, both
ends on one worker) and is driven by the bench's C load generator; the
figures are taken in the middle ``--duration`` seconds of each run. Servers
take turns, ``--repeat`` times, and the median run of each is shown. Run it on
a quiet machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts import bench, benchload, ircpeers  # noqa: E402

#: perf events, in the order ``parse_perf`` returns them.
EVENTS = ("raw_syscalls:sys_enter", "context-switches")
#: Seconds of load before and after the measured window.
MARGIN = 1.0


@dataclass(frozen=True)
class Cost:
    """One run: round trips a second, and per round trip what the server spent."""

    rate: float
    syscalls: float  # nan without perf
    switches: float
    user_us: float
    kernel_us: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.kernel_us


def parse_perf(text: str) -> dict[str, float]:
    """Counts by event from ``perf stat -x,`` output (``<not supported>`` ones left out)."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or fields[2] not in EVENTS:
            continue
        try:
            counts[fields[2]] = float(fields[0])
        except ValueError:
            continue
    return counts


def per_trip(total: float, rate: float, seconds: float) -> float:
    trips = rate * seconds
    return total / trips if trips > 0 else float("nan")


class Running:
    """One server of ``--servers``, started and given its pairs; ``stop`` reaps it."""

    def __init__(self, name: str, pairs: int, workdir: Path) -> None:
        self.irc = not name.startswith("w")
        self.server: bench.Server | ircpeers.PeerServer
        if self.irc:
            self.server = ircpeers.PeerServer(name, 2 * pairs + 16, workdir)
            self.pairs = ircpeers.open_pairs(self.server.host, self.server.port, pairs)
        else:
            spec = bench.matchmaker_spec(int(name[1:]), 2 * pairs + 16)
            self.server = bench.Server(spec, workdir)
            self.pairs = benchload.open_pairs(
                self.server.host, self.server.port, self.server.pid, pairs, "same", True
            )

    def stop(self) -> None:
        self.pairs.close()
        self.server.stop()
        if isinstance(self.server, ircpeers.PeerServer):
            self.server.cleanup()


def measure(name: str, pairs: int, seconds: float, exe: Path, workdir: Path) -> Cost:
    """Drive ``name`` for ``seconds`` plus margins; what it spent in the middle ``seconds``."""
    running = Running(name, pairs, workdir)
    try:
        procs = benchload.tree(running.server.pid)
        result: dict[str, benchload.PairsResult] = {}

        def drive() -> None:
            result["r"] = benchload.run_pairs(
                exe, "pingpong", running.pairs, running.server.pid, MARGIN,
                seconds + 2 * MARGIN, workdir, irc=running.irc,
            )  # fmt: skip

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(2 * MARGIN)  # past the helper's warm-up: the load is on
        before = [p.cpu_times() for p in procs]
        started = time.monotonic()
        perf = shutil.which("perf")
        counts: dict[str, float] = {}
        if perf:
            pids = ",".join(str(p.pid) for p in procs)
            argv = [perf, "stat", "-x,", "-e", ",".join(EVENTS), "-p", pids, "--"]
            done = subprocess.run(
                [*argv, "sleep", str(seconds)], capture_output=True, text=True, check=False
            )
            counts = parse_perf(done.stderr)
        else:
            time.sleep(seconds)
        window = time.monotonic() - started
        after = [p.cpu_times() for p in procs]
        driver.join()
        run = result["r"]
        rate = run.counts["ops"] / (run.counts["window_ns"] / 1e9)
        if run.counts.get("lost") or run.counts.get("ooo"):
            raise RuntimeError(f"{name}: lines lost or out of order: {run.counts}")
        user = sum(b.user - a.user for a, b in zip(before, after, strict=True))
        kernel = sum(b.system - a.system for a, b in zip(before, after, strict=True))
        return Cost(
            rate=rate,
            syscalls=per_trip(counts.get(EVENTS[0], float("nan")), rate, window),
            switches=per_trip(counts.get(EVENTS[1], float("nan")), rate, window),
            user_us=per_trip(user * 1e6, rate, window),
            kernel_us=per_trip(kernel * 1e6, rate, window),
        )
    finally:
        running.stop()


def median_run(runs: list[Cost]) -> Cost:
    """The run of median rate (a real run, not a mix of several)."""
    ranked = sorted(runs, key=lambda c: c.rate)
    return ranked[(len(ranked) - 1) // 2]


def table(results: dict[str, list[Cost]]) -> str:
    head: tuple[str, ...] = ("server", "rt/s", "syscalls/rt", "switches/rt", "user us/rt")
    head += ("kernel us/rt",)
    head += ("cpu us/rt", "user spread")
    lines = [head]
    for name, runs in results.items():
        c = median_run(runs)
        users = [r.user_us for r in runs]
        spread = f"{min(users):.2f}-{max(users):.2f}" if len(runs) > 1 else ""
        lines.append(
            (name, f"{c.rate:,.0f}", f"{c.syscalls:.2f}", f"{c.switches:.3f}")
            + (f"{c.user_us:.2f}", f"{c.kernel_us:.2f}", f"{c.cpu_us:.2f}", spread)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                  enumerate(zip(line, widths, strict=True))).rstrip()
        for line in lines
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/rtcost.py",
        description="Per pingpong round trip: system calls, task switches, user and kernel CPU "
        "of every process of each server.",
    )
    parser.add_argument(
        "--servers",
        default="w1,w2,inspircd",
        help="comma list: wN (python -m matchmaker --workers N), inspircd, ngircd "
        "(default %(default)s)",
    )
    parser.add_argument("--pairs", type=int, default=32, help="pairs (default %(default)s)")
    parser.add_argument(
        "--duration", type=float, default=4.0, help="measured seconds (default %(default)s)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each server, in turn (default %(default)s)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    for name in names:
        if name.startswith("w") and name[1:].isdigit() and int(name[1:]) > 0:
            continue
        if name not in ircpeers.PEERS:
            parser.error(f"unknown server {name!r}: wN, inspircd or ngircd")
        if ircpeers.find_binary(name) is None:
            parser.error(ircpeers.not_installed(name))
    if args.pairs < 1 or args.duration <= 0 or args.repeat < 1:
        parser.error("--pairs, --duration and --repeat must be positive")
    if shutil.which("perf") is None:
        print("perf not found: system calls and task switches are n/a", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="rtcost-"))
    try:
        exe = benchload.build_helper(workdir)
        results: dict[str, list[Cost]] = {name: [] for name in names}
        for k in range(args.repeat):
            for name in names:
                cost = measure(name, args.pairs, args.duration, exe, workdir)
                results[name].append(cost)
                print(
                    f"run {k + 1}/{args.repeat} {name}: {cost.rate:,.0f} rt/s, "
                    f"{cost.cpu_us:.2f} us/rt",
                    file=sys.stderr,
                )
        print(f"pingpong {args.pairs} pairs, {args.duration:g} s each, median of {args.repeat}")
        print(table(results))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
