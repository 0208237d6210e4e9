"""What each server process holds, idle and with C idle clients: RSS, PSS and USS by title.

``python scripts/memprobe.py [--clients 10000] [--workers 2] [--server-args ARGS]``

The bench's conns row gives the totals; this gives them per process, which is
what says where memory goes (docs/PERFORMANCE.md, "Memory"). It starts the
server as the bench does (``scripts/bench.py``'s flags, port 0), serves one
client and waits for RSS to settle, reads every process, then opens the
clients with the bench's C load generator (100 connecting at a time, each
done at its ``WELCOME``), reads every process again while all of them are
connected, and stops the server. Run it on a quiet machine: other processes that
map the same libraries change every PSS.

USS is what a process alone holds (freed if it exits); PSS adds its share of
the pages it shares; RSS counts shared pages in full in every process.
Per client = (total with C clients - total idle) / C.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts import bench, benchload  # noqa: E402

#: One snapshot: title -> (pid, rss, pss, uss) in bytes.
Snapshot = dict[str, tuple[int, int, int, int]]


def snapshot(server_pid: int) -> Snapshot:
    """Every process of the server's tree, by title (``matchmaker: worker 1``)."""
    out: Snapshot = {}
    for p in benchload.tree(server_pid):
        try:
            full = p.memory_full_info()
        except psutil.Error:
            continue
        name = benchload.title(p)
        if name in out:  # two untitled processes of one program
            name = f"{name} ({p.pid})"
        out[name] = (p.pid, full.rss, getattr(full, "pss", 0), getattr(full, "uss", 0))
    return out


def totals(snap: Snapshot) -> tuple[int, int, int]:
    return tuple(sum(v[i] for v in snap.values()) for i in (1, 2, 3))  # type: ignore[return-value]


def report(idle: Snapshot, loaded: Snapshot, clients: int) -> str:
    def mb(n: int) -> str:
        return f"{n / 1e6:7.1f}"

    lines = [
        f"{'process':<26} {'pid':>7}  {'RSS idle':>8} {'PSS idle':>8} {'USS idle':>8}"
        f"  {'RSS':>7} {'PSS':>7} {'USS':>7}   (MB; right: with {clients} clients)"
    ]
    for name in sorted(set(idle) | set(loaded)):
        a = idle.get(name, (0, 0, 0, 0))
        b = loaded.get(name, (0, 0, 0, 0))
        pid = b[0] or a[0]
        lines.append(
            f"{name.removeprefix('matchmaker: '):<26} {pid:>7}  {mb(a[1])} {mb(a[2])} {mb(a[3])}"
            f"   {mb(b[1])} {mb(b[2])} {mb(b[3])}"
        )
    ta, tb = totals(idle), totals(loaded)
    lines.append(
        f"{'total':<26} {'':>7}  {mb(ta[0])} {mb(ta[1])} {mb(ta[2])}"
        f"   {mb(tb[0])} {mb(tb[1])} {mb(tb[2])}"
    )
    per = [(b - a) / max(clients, 1) for a, b in zip(ta, tb, strict=True)]
    lines.append(
        f"per client: RSS {per[0] / 1e3:.2f} kB, PSS {per[1] / 1e3:.2f} kB, "
        f"USS {per[2] / 1e3:.2f} kB"
    )
    return "\n".join(lines)


def settle(server_pid: int, bound: float = 10.0) -> None:
    """Until the total RSS moves by under 0.5% over a quarter second (children import lazily)."""
    deadline = time.monotonic() + bound
    last = totals(snapshot(server_pid))[0]
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = totals(snapshot(server_pid))[0]
        if abs(now - last) <= last // 200:
            return
        last = now


def measure(args: argparse.Namespace, exe: Path, workdir: Path) -> tuple[Snapshot, Snapshot, int]:
    spec = bench.matchmaker_spec(args.workers, args.clients, shlex.split(args.server_args))
    server = bench.Server(spec, workdir)
    try:
        benchload.connect(server.host, server.port).close()
        settle(server.pid)
        idle = snapshot(server.pid)
        argv = [str(exe), "conns", server.host, str(server.port), str(args.clients)]
        argv += [str(benchload.CONNECT_WINDOW), "1", str(10**9), str(workdir / "samples.bin")]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            reader = benchload.LineReader(proc)
            deadline = time.monotonic() + 300
            _, _elapsed, ok, _failed = reader.line(deadline).split()
            reader.line(deadline)  # the GET's figures
            if reader.line(deadline) != "READY":
                raise RuntimeError("the load generator lost its step")
            loaded = snapshot(server.pid)
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return idle, loaded, int(ok)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000, help="idle clients (10000)")
    parser.add_argument("--workers", type=int, default=2, help="the server's workers (2)")
    parser.add_argument("--server-args", default="", help="more flags for python -m matchmaker")
    parser.add_argument("--json", type=Path, help="also write both snapshots here")
    args = parser.parse_args(argv)
    benchload.raise_fd_limit(args.clients + 256)
    workdir = benchload.scratch()
    try:
        exe = benchload.build_helper(workdir)
        idle, loaded, ok = measure(args, exe, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(idle, loaded, ok))
    if ok != args.clients:
        print(f"only {ok} of {args.clients} clients connected", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"clients": ok, "idle": idle, "loaded": loaded}) + "\n")
    return 0 if ok == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
