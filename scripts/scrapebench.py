"""How long a metrics scrape takes with many idle clients connected.

Starts ``python -m matchmaker --metrics-port 0`` from this checkout, connects
``--clients`` idle clients (each done at its ``WELCOME``), then times
``--scrapes`` scrapes of ``/metrics`` one after the other and checks that the
scrape counts every client. Target (docs/PERFORMANCE.md, "Metrics"): p99 under
50 ms at 10,000 clients.

    python scripts/scrapebench.py --clients 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 50.0
BATCH = 500  # connections opened before waiting for their WELCOMEs


def start(workers: int, clients: int) -> tuple[subprocess.Popen[bytes], int, int]:
    """The server, its plain port and its metrics port (read from its output)."""
    cmd = [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", "0",
           "--workers", str(workers), "--metrics-port", "0", "--max-clients", str(clients + 16),
           "--max-per-ip", "0", "--accept-rate", "0", "--log-level", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    while "plain" not in ports:
        line = proc.stdout.readline().decode()
        if not line:
            raise SystemExit(f"the server exited: {proc.wait()}")
        found = re.match(r"(metrics |\w+ )?listening on .*:(\d+)$", line.strip())
        if found:
            ports[(found[1] or "plain ").strip()] = int(found[2])
    return proc, ports["plain"], ports["metrics"]


def scrape(port: int) -> tuple[float, bytes]:
    began = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read()
    return (time.perf_counter() - began) * 1000, body


async def measure(port: int, metrics: int, clients: int, scrapes: int) -> list[float]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    while len(conns) < clients:
        batch = [await asyncio.open_connection("127.0.0.1", port)
                 for _ in range(min(BATCH, clients - len(conns)))]  # fmt: skip
        welcomes = await asyncio.gather(*(reader.readline() for reader, _ in batch))
        assert all(w.startswith(b"WELCOME ") for w in welcomes), welcomes[:3]
        conns.extend(batch)
    times = []
    body = b""
    for _ in range(scrapes):
        took, body = await asyncio.to_thread(scrape, metrics)
        times.append(took)
    counted = re.search(rb"\nmatchmaker_clients_connected (\S+)", body)
    assert counted is not None and float(counted[1]) == clients, counted
    for _, writer in conns:
        writer.close()
    return sorted(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10_000, help="idle clients (default 10000)")
    p.add_argument("--scrapes", type=int, default=50, help="scrapes timed (default 50)")
    p.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a descriptor per client here
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, port, metrics = start(args.workers, args.clients)
    try:
        times = asyncio.run(measure(port, metrics, args.clients, args.scrapes))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    p99 = times[max(0, -(-99 * len(times) // 100) - 1)]  # nearest rank
    print(f"{args.clients} clients, {len(times)} scrapes: p50 {times[len(times) // 2]:.2f} ms, "
          f"p99 {p99:.2f} ms, max {times[-1]:.2f} ms")  # fmt: skip
    verdict = "PASS" if p99 < TARGET_MS else "FAIL"
    print(f"{verdict}  scrape p99 < {TARGET_MS:g} ms at {args.clients} clients: {p99:.2f} ms")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
