"""Benchmark: throughput, latency, memory and churn of a protocol v1 server, as ratios.

``python scripts/bench.py [--quick] [--compare] [--workers N | --server-cmd CMD | --hosts N]``

Starts the server itself (a fresh one for every measurement, on 127.0.0.1),
drives it with the C load generator of ``scripts/benchload.py``, checks that
every line arrived in order, and prints one table plus JSON lines. Workloads:

- pingpong: P pairs bounce one 64-byte line: round trips/s, latency p50/p99/p99.9.
- stream: P pairs, each sender keeps 64 lines in flight: lines/s, latency p50/p99.
- churn: P pairs loop CONNECT, one line, #GOODBYE#: sessions/s.
- conns: C idle clients: total RSS of the server's processes, RSS per client,
  time to connect them all, GET round trip at C.
- flood: P pairs on one worker chat (a round trip every 80 ms each), alone, then
  beside one client that sends as fast as it can: their p99 with and without it
  (target: at most 2x), and how fast the flooder's lines got through.

The throughput rows run ``python -m matchmaker`` with ``--rate 0 --max-per-ip 0
--accept-rate 0`` (``UNLIMITED``): every client comes from 127.0.0.1 and sends
without pause, which is what they measure. The flood rows run it with
``--workers 1`` and the default ``--rate``/``--burst``, and once more with
``--rate 0`` beside them, to show what the pacing buys.

Pair workloads run same-worker and cross-worker pairs separately; where each
client landed is read from the server's processes (psutil), so a
single-process server simply has no cross-worker rows. Ratios are to the plain
asyncio relay ``scripts/refserver.py`` ("ref"), measured in the same run:
``--compare`` runs ref, ``--workers 1`` and ``--workers N``. Measurements of
the servers are interleaved (ref, w1, wN for each workload) so that drift of
the machine hits them alike. docs/PERFORMANCE.md has the numbers and the how.

``--tls`` measures pingpong 32 and stream 32 over TLS beside plain, same- and
cross-worker, on one server with ``--tls-port`` and a certificate made for the
run (trustme). The C helper speaks no TLS: both kinds of rows are driven by
the asyncio load generator of ``scripts/tlsload.py``, so their ratio compares
like with like, and neither is comparable with the C-driven rows.

``--peer inspircd,ngircd`` adds Debian's C IRC servers to the row set, each
started per row with a generated config (``scripts/ircpeers.py``: flood limits
off, no per-address limits) and driven over IRC by the same C load generator
(registered nicks that PRIVMSG each other): pingpong, stream and conns rows,
``x inspircd`` ratios for ours, and the targets against InspIRCd.

``--hosts 2`` measures the cluster mode instead: per row a fresh Redis and two
servers sharing it (``--redis``, ``--node h1/h2``), pairs with one end on each
host, GET at 10,000 clients spread over both, beside one server of the same
total workers with ``--migrate off`` (pairs across its workers), so that the
``x 1host`` ratios come from one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as ``python scripts/bench.py``
    sys.path.insert(0, str(REPO))

from scripts import benchload, ircpeers  # noqa: E402
from scripts.redisproc import RedisProcess, free_port  # noqa: E402

HOST = "127.0.0.1"
#: How long a server may take to listen, and to stop after SIGINT.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
#: Descriptors beyond the clients, for the load generator and the server.
FD_MARGIN = 256
#: Labels of the reference relay and of the --server-cmd server.
REF, CMD = "ref", "cmd"
WORKLOADS = ("pingpong", "stream", "churn", "conns", "flood")
#: Flags of every throughput row: the limits a public server needs would measure
#: themselves (every client is on 127.0.0.1, and a pingpong client sends without pause).
UNLIMITED = ("--rate", "0", "--max-per-ip", "0", "--accept-rate", "0")
#: The flood rows: one worker (the flooder and the pairs share it), default pacing.
FLOOD_FLAGS = ("--workers", "1", "--max-per-ip", "0", "--accept-rate", "0")
#: The flood target: the pairs' p99 beside a flooder, at most this times their p99 alone.
FLOOD_BOUND = 2.0
#: Placement of a pair whose ends are clients of two hosts (--hosts); of conns spread over them.
HOSTS = "hosts"
#: GETs timed at C clients, and how long they may take: by default, and with --hosts.
GETS, HOST_GETS = 50, 200
GETS_SECONDS, HOST_GETS_SECONDS = 3.0, 10.0
UNITS = {"pingpong": "rt/s", "stream": "lines/s", "churn": "sessions/s"}
#: Work per CPU: round trips per CPU-second of every server process (pingpong rows).
PER_CPU = "rt/cpu-s"
#: The peer the issue's peer targets compare with.
PEER_GOAL = "inspircd"
#: What the peers (IRC) cannot run, and why; printed under the table.
PEER_NOTES = {
    "churn": "churn: no IRC equivalent of CONNECT/#GOODBYE# (a pair is two nicks that "
    "PRIVMSG each other, with nothing to open or end), so the peers have no churn rows",
    "flood": "flood: our --rate pacing against a flooder; the peers run with flood limits "
    "off and have no flood rows",
    "get": "conns: GET (list every client) has no one-line IRC equivalent, so the peers' "
    "conns rows have no get p50/p99",
    "window": "conns: clients registering at once: ours 100; InspIRCd 1,000 (it completes "
    "registrations once a second); ngIRCd 8 (its listen backlog is 10); so connect times "
    "are not comparable",
}
#: The issue's idle clients on one host: connect rate, GET FREE p99 and PSS targets.
HUNDRED_K = 100_000


# ---- statistics (pure) -------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``ordered`` (sorted ascending).

    Nearest rank returns a value that was measured, never an interpolation; with
    fewer than 1000 samples p99.9 is simply the largest.
    """
    if not ordered:
        return math.nan
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def latencies_ms(samples: Iterable[int], qs: Sequence[float]) -> dict[float, float]:
    """Percentiles ``qs`` of nanosecond samples, in milliseconds."""
    ordered = sorted(samples)
    return {q: percentile(ordered, q) / 1e6 for q in qs}


def ratio(value: float, base: float) -> float | None:
    if not base or math.isnan(base) or math.isnan(value):
        return None
    return value / base


# ---- results -----------------------------------------------------------------------------


@dataclass
class Row:
    """One measured number: a workload, its size and placement, a server, a metric."""

    workload: str
    size: int
    placement: str  # same, cross, or - (conns)
    server: str
    metric: str
    value: float
    unit: str
    #: the run's checks and CPU use; carried by every row, shown on the run's first
    run: dict[str, Any] = field(default_factory=dict)
    first: bool = False
    ratio_ref: float | None = None
    ratio_same: float | None = None
    #: (--hosts) value / the one-host relayed server's value of the same workload and metric
    ratio_1host: float | None = None
    #: (--peer) value / each peer's value of the same workload, size and metric (same rows)
    ratio_peer: dict[str, float | None] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, str, str]:
        return (self.workload, self.size, self.placement, self.metric)

    def json(self) -> dict[str, Any]:
        out = {
            k: getattr(self, k)
            for k in ("workload", "size", "placement", "server", "metric", "value", "unit")
        }
        out["ratio_ref"], out["ratio_same"] = self.ratio_ref, self.ratio_same
        if self.placement == HOSTS:
            out["ratio_1host"] = self.ratio_1host
        for peer, value in self.ratio_peer.items():
            out[f"ratio_{peer}"] = value
        out.update(self.run)
        return out


def add_ratios(rows: list[Row], ref: str = REF) -> None:
    """Fill ``ratio_ref`` (value / the reference's same-placement value) and ``ratio_same``.

    The reference is single-process, so every placement is compared with its
    ``same`` rows; ``ratio_same`` (cross rows only) compares a server with itself.
    """
    index = {(r.server, *r.key): r for r in rows}
    for r in rows:
        base_placement = "-" if r.placement == "-" else "same"
        base = index.get((ref, r.workload, r.size, base_placement, r.metric))
        if base is not None and r.server != ref:
            r.ratio_ref = ratio(r.value, base.value)
        if r.placement == "cross":
            same = index.get((r.server, r.workload, r.size, "same", r.metric))
            if same is not None:
                r.ratio_same = ratio(r.value, same.value)


def add_peer_ratios(rows: list[Row], peers: Sequence[str]) -> None:
    """Fill ``ratio_peer`` of every row of ours: value / each peer's value of the same
    workload, size and metric. A peer is one process, so it has only ``same`` rows (and
    conns rows, placement ``-``); ``cross`` rows are compared with them, as with ref."""
    index = {(r.server, *r.key): r for r in rows if r.server in peers}
    for r in rows:
        if r.server in peers or r.server == REF:
            continue
        for peer in peers:
            base_placement = "-" if r.placement == "-" else "same"
            base = index.get((peer, r.workload, r.size, base_placement, r.metric))
            if base is not None:
                r.ratio_peer[peer] = ratio(r.value, base.value)


def add_host_ratios(rows: list[Row], base: str) -> None:
    """Fill ``ratio_1host`` of the cross-host rows: value / the ``base`` server's value.

    ``base`` is the one-host server whose pairs are across its workers (``cross``,
    relayed by its matchmaker with ``--migrate off``); conns rows have no placement.
    """
    index = {(r.workload, r.size, r.metric): r for r in rows if r.server == base}
    for r in rows:
        if r.placement == HOSTS:
            one = index.get((r.workload, r.size, r.metric))
            if one is not None:
                r.ratio_1host = ratio(r.value, one.value)


@dataclass(frozen=True)
class Target:
    """One line of the issue's targets, and whether this run met it (None: not measured)."""

    goal: str
    measured: str
    ok: bool | None


def _find(rows: list[Row], server: str, workload: str, size: int, metric: str) -> list[Row]:
    return [
        r
        for r in rows
        if (r.server, r.workload, r.size, r.metric) == (server, workload, size, metric)
    ]


def targets(rows: list[Row], server: str) -> list[Target]:
    """The issue's targets for ``server`` (the --workers N server), read off ``rows``."""
    out: list[Target] = []

    def at_least(workload: str, size: int, metric: str, want: float) -> None:
        found = _find(rows, server, workload, size, metric)
        goal = f"{workload} {size} {metric} >= {want}x ref"
        if not found:
            out.append(Target(goal, "not measured", None))
        for r in found:
            got = r.ratio_ref
            text = f"{r.placement}: {got:.2f}x" if got is not None else f"{r.placement}: no ref"
            out.append(Target(goal, text, None if got is None else got >= want))

    def below(workload: str, size: int, metric: str, limit: float, unit: str) -> None:
        found = _find(rows, server, workload, size, metric)
        goal = f"{workload} {size} {metric} < {limit:g} {unit}"
        if not found:
            out.append(Target(goal, "not measured", None))
        for r in found:
            where = f"{r.placement}: " if r.placement != "-" else ""
            out.append(Target(goal, f"{where}{fmt(r.value)} {r.unit}", r.value < limit))

    at_least("pingpong", 32, "rate", 3.0)
    at_least("pingpong", 256, "rate", 3.0)
    below("pingpong", 32, "p99", 5.0, "ms")
    at_least("stream", 32, "rate", 2.0)
    at_least("churn", 32, "rate", 2.5)  # round two; 1.5x before
    for r in rows:
        if r.server == server and r.placement == "cross" and r.metric == "rate":
            got = r.ratio_same
            out.append(
                Target(
                    f"{r.workload} {r.size} cross >= 0.8x same",
                    "no same row" if got is None else f"{got:.2f}x",
                    None if got is None else got >= 0.8,
                )
            )

    def above(workload: str, size: int, metric: str, least: float, unit: str) -> None:
        found = _find(rows, server, workload, size, metric)
        goal = f"{workload} {size} {metric} >= {least:,g} {unit}"
        if not found:
            out.append(Target(goal, "not measured", None))
        for r in found:
            out.append(Target(goal, f"{fmt(r.value)} {r.unit}", r.value >= least))

    below("conns", 10000, "rss", 100.0, "MB")
    below("conns", 10000, "pss", 60.0, "MB")  # round two
    below("conns", 10000, "rss/client", 2.5, "kB")
    below("conns", 10000, "get p50", 50.0, "ms")
    # 100,000 idle clients on one host (several helpers and source addresses)
    for r in _find(rows, server, "conns", HUNDRED_K, "connect"):
        failed = r.run.get("errors", 0)
        entries, connected = r.run.get("entries"), r.run.get("connected")
        out.append(
            Target(
                f"conns {HUNDRED_K}: every client WELCOMEd and listed",
                f"{connected:,} WELCOMEd, {failed} failed, GET FREE listed {entries:,}",
                not failed and connected == entries == HUNDRED_K,
            )
        )
    above("conns", HUNDRED_K, "connect rate", 20000.0, "conn/s")
    below("conns", HUNDRED_K, "get free p99", 100.0, "ms")
    below("conns", HUNDRED_K, "pss", 400.0, "MB")
    bad = [
        r
        for r in rows
        if r.first and (r.run.get("lost") or r.run.get("out_of_order") or r.run.get("errors"))
    ]
    out.append(
        Target(
            "every line arrived, in order (all servers, all runs)",
            "; ".join(f"{r.server} {r.workload} {r.size} {r.placement}" for r in bad) or "yes",
            not bad,
        )
    )
    return out


def host_targets(rows: list[Row], label: str) -> list[Target]:
    """The cross-host targets, for the cluster ``label``, read off ``rows``."""
    out: list[Target] = []
    found = _find(rows, label, "pingpong", 32, "rate")
    out.append(
        Target(
            "pingpong 32 across hosts >= 0.5x one host relayed",
            ", ".join(fmt_ratio(r.ratio_1host) or "no one-host row" for r in found)
            or "not measured",
            all(r.ratio_1host is not None and r.ratio_1host >= 0.5 for r in found)
            if found
            else None,
        )
    )
    found = _find(rows, label, "conns", 10000, "get p99")
    out.append(
        Target(
            "GET at 10,000 clients over the hosts: p99 < 50 ms",
            ", ".join(f"{fmt(r.value)} ms" for r in found) or "not measured",
            all(r.value < 50.0 for r in found) if found else None,
        )
    )
    bad = [
        r
        for r in rows
        if r.first and (r.run.get("lost") or r.run.get("out_of_order") or r.run.get("errors"))
    ]
    out.append(
        Target(
            "0 lines lost, none out of order (every server, every repeat)",
            "; ".join(f"{r.server} {r.workload} {r.size} {r.placement}" for r in bad) or "yes",
            not bad,
        )
    )
    return out


def peer_targets(rows: list[Row], server: str, peer: str = PEER_GOAL) -> list[Target]:
    """The issue's targets of ``server`` (ours, --workers N) against ``peer``, read off
    ``rows``: rates and work per CPU at least the peer's times a factor, p99 at most its."""
    out: list[Target] = []

    def versus(workload: str, size: int, metric: str, want: float, higher: bool) -> None:
        found = _find(rows, server, workload, size, metric)
        goal = f"{workload} {size} {metric} " + (
            f">= {want:g}x {peer}" if higher else f"<= {peer}'s"
        )
        if not found:
            out.append(Target(goal, "not measured", None))
        for r in found:
            got = r.ratio_peer.get(peer)
            if got is None:
                out.append(Target(goal, f"{r.placement}: no {peer} row", None))
                continue
            text = f"{r.placement}: {fmt(r.value)} {r.unit}, {got:.2f}x"
            out.append(Target(goal, text, got >= want if higher else got <= want))

    versus("pingpong", 32, "rate", 1.0, higher=True)
    versus("pingpong", 256, "rate", 1.0, higher=True)
    versus("pingpong", 32, "p99", 1.0, higher=False)
    versus("pingpong", 32, PER_CPU, 1.0, higher=True)
    versus("pingpong", 256, PER_CPU, 1.0, higher=True)
    versus("stream", 32, "rate", 1.2, higher=True)
    return out


def memory_beside(rows: list[Row], servers: Sequence[str]) -> list[str]:
    """For each conns size: RSS and PSS of ``servers`` side by side (no target: a report)."""
    out = []
    for size in sorted({r.size for r in rows if r.workload == "conns"}):
        parts = []
        for name in servers:
            got = {r.metric: r for r in _find_conns(rows, name, size)}
            if "rss" in got and "pss" in got:
                parts.append(
                    f"{name} RSS {fmt(got['rss'].value)} MB, PSS {fmt(got['pss'].value)} MB"
                )
        if parts:
            out.append(f"{size:,} idle clients: " + "; ".join(parts))
    return out


def _find_conns(rows: list[Row], server: str, size: int) -> list[Row]:
    return [r for r in rows if (r.server, r.workload, r.size) == (server, "conns", size)]


def median_run(runs: list[list[Row]]) -> list[Row]:
    """Of repeated runs of one measurement, the one with the median first value (rate, time).

    Correctness is not a median: its lost, out-of-order and error counts become
    the sums over every repeat, and ``repeats`` lists each run's first value.
    """
    ordered = sorted(runs, key=lambda rows: rows[0].value)
    chosen = ordered[(len(ordered) - 1) // 2]
    run = chosen[0].run  # shared by every row of the run
    if len(runs) > 1:
        for key in ("lost", "out_of_order", "errors"):
            run[key] = sum(rows[0].run.get(key, 0) for rows in runs)
        run["repeats"] = [rows[0].value for rows in runs]
    return chosen


# ---- output ------------------------------------------------------------------------------


def fmt(value: float) -> str:
    """Three significant digits, thousands grouped; whole numbers from 1000 up."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def table(rows: list[Row]) -> str:
    """The human table, grouped so that the servers of one measurement sit together."""
    hosts = any(r.placement == HOSTS for r in rows)
    head: tuple[str, ...] = ("workload", "P/C", "place", "server", "metric", "value", "unit")
    head += ("x ref", "x same", "lost", "ooo", "err", "load%", "idle%", "other")
    head += ("x 1host",) if hosts else ()
    peers: dict[str, None] = {}  # the peers some row has a ratio to, in order
    for r in rows:
        peers.update(dict.fromkeys(r.ratio_peer))
    head += tuple(f"x {p}" for p in peers)
    lines: list[tuple[str, ...]] = [head]
    order = {w: i for i, w in enumerate(WORKLOADS)}
    servers: dict[str, int] = {}
    for r in rows:
        servers.setdefault(r.server, len(servers))
    metrics: dict[str, int] = {}
    for r in rows:
        metrics.setdefault(r.metric, len(metrics))
    ranked = sorted(
        rows,
        key=lambda r: (
            order.get(r.workload, 9),
            r.size,
            r.placement != "same",
            metrics[r.metric],
            servers[r.server],
        ),
    )
    for r in ranked:
        checks: tuple[str, ...] = ("",) * 6
        if r.first:
            run = r.run
            checks = (
                str(run.get("lost", "")),
                str(run.get("out_of_order", "")),
                str(run.get("errors", "")),
                f"{100 * run['load_share']:.0f}" if "load_share" in run else "",
                f"{100 * run['idle']:.0f}" if "idle" in run else "",
                f"{run['other_cores']:.2f}" if "other_cores" in run else "",
            )
        lines.append(
            (r.workload, str(r.size), r.placement, r.server, r.metric, fmt(r.value), r.unit)
            + (fmt_ratio(r.ratio_ref), fmt_ratio(r.ratio_same))
            + checks
            + ((fmt_ratio(r.ratio_1host),) if hosts else ())
            + tuple(fmt_ratio(r.ratio_peer.get(p)) for p in peers)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    right = set(range(len(head))) - {0, 2, 3, 4, 6}
    out = []
    for line in lines:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


# ---- servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: ``{port}`` in argv is replaced by a free port, if present."""

    label: str
    argv: tuple[str, ...]
    #: more than 1: a cluster of that many servers, each ``argv`` with ``--redis URL --node hK``
    hosts: int = 1
    #: an IRC server of scripts/ircpeers.py (``argv`` unused): started with its own config
    peer: str = ""


def matchmaker_spec(workers: int, max_clients: int, extra: Sequence[str] = ()) -> ServerSpec:
    """``python -m matchmaker`` from this checkout; round robin makes placement predictable."""
    argv: tuple[str, ...] = (sys.executable, "-m", "matchmaker", "--host", HOST, "--port", "0")
    argv += ("--workers", str(workers), "--placement", "round-robin")
    argv += ("--max-clients", str(max_clients), *UNLIMITED, *extra)
    return ServerSpec(f"w{workers}", argv)


def ref_spec() -> ServerSpec:
    script = str(REPO / "scripts" / "refserver.py")
    return ServerSpec(REF, (sys.executable, script, "--host", HOST, "--port", "0"))


class Server:
    """A running server: its process (the top of its tree), address and log file."""

    def __init__(self, spec: ServerSpec, logdir: Path) -> None:
        self.spec = spec
        self.log_path = logdir / f"server-{spec.label}.log"
        argv = list(spec.argv)
        if any("{port}" in a for a in argv):
            port = str(free_port())
            argv = [a.replace("{port}", port) for a in argv]
        self.argv = argv
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # its own process group, to kill stragglers
            )
        self.host, self.port = HOST, 0
        self.tls_port = 0  # with --tls-port: printed before the plain port
        self.ws_port = 0  # with --ws-port: the same
        try:
            reader = benchload.LineReader(self.proc, f"server {spec.label}")
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                line = reader.line(deadline)
                if line.startswith("tls listening on "):
                    self.tls_port = int(line.rpartition(":")[2])
                if line.startswith("ws listening on "):
                    self.ws_port = int(line.rpartition(":")[2])
                if line.startswith("listening on "):
                    host, _, port_text = line.split()[-1].rpartition(":")
                    self.host, self.port = host.strip("[]"), int(port_text)
                    break
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{spec.label} did not start: {exc}\n{self.log_tail()}") from exc
        if self.host in ("0.0.0.0", "::", ""):
            self.host = HOST
        # keep reading, so that a chatty server never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        while self.proc.stdout.read(65536):
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL to the whole group after STOP_TIMEOUT; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this server was started in
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """A fresh Redis and ``spec.hosts`` servers sharing it, nodes ``h1``, ``h2``, ..."""

    def __init__(self, spec: ServerSpec, workdir: Path) -> None:
        self.redis = RedisProcess(parent=workdir)
        self.servers: list[Server] = []
        try:
            for k in range(1, spec.hosts + 1):
                argv = (*spec.argv, "--redis", self.redis.url, "--node", f"h{k}")
                self.servers.append(Server(ServerSpec(f"{spec.label}-h{k}", argv), workdir))
        except BaseException:
            self.stop()
            raise

    @property
    def endpoints(self) -> list[benchload.Endpoint]:
        return [(s.host, s.port, s.pid) for s in self.servers]

    @property
    def pids(self) -> dict[str, int]:
        """Every process to measure, by name: the hosts' top processes and Redis."""
        out = {f"h{k}": s.pid for k, s in enumerate(self.servers, 1)}
        out["redis"] = self.redis.pid
        return out

    @property
    def command(self) -> str:
        return " ; ".join(" ".join(shlex.quote(a) for a in s.argv) for s in self.servers)

    def stop(self) -> list[int | None]:
        """Stop every host (SIGINT, as a one-host server), then Redis; the hosts' statuses."""
        try:
            return [s.stop() for s in self.servers]
        finally:
            self.redis.stop()

    def log_tail(self) -> str:
        return "\n".join(f"{s.log_path}:\n{s.log_tail()}" for s in self.servers)


# ---- profiles (--py-spy) -----------------------------------------------------------------


class Profiles:
    """py-spy recording the matchmaker and workers of the servers while a pair workload runs.

    Raw collapsed stacks (``--format raw``, no line numbers, idle stacks left out)
    sampled at 100 Hz without pausing the process (``--nonblocking``), one file per
    process: ``DIR/<server>-<workload><P>-<process>.txt``. py-spy counts a thread as
    busy while it is runnable, so time in a system call that woke another process
    and lost the CPU to it counts; ``gil`` keeps only the samples holding the GIL,
    which is the interpreter's own CPU (system calls release it). A profiled run
    measures the profiler too: its numbers are not the table's.
    """

    RATE = 100

    def __init__(
        self,
        directory: Path | None,
        tag: str,
        servers: benchload.Servers,
        seconds: float,
        gil: bool = False,
        roles: Sequence[str] = ("matchmaker", "worker"),
    ) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.paths: list[Path] = []
        self.seconds = seconds
        if directory is None:
            return
        spy = shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--py-spy needs py-spy (pip install py-spy)")
        directory.mkdir(parents=True, exist_ok=True)
        procs, names = benchload.server_tree(servers)
        for p in procs:
            name = (names.get(p.pid, "") + benchload.title(p)).replace("matchmaker: ", "")
            if not any(role in name for role in roles):
                continue  # supervisor, acceptor: idle (but conns); resource tracker, Redis
            path = directory / f"{tag}-{name.strip().replace(' ', '-')}.txt"
            argv = [spy, "record", "--pid", str(p.pid), "--rate", str(self.RATE)]
            argv += ["--duration", str(max(1, round(seconds))), "--nonblocking"]
            argv += ["--format", "raw", "--nolineno", "-o", str(path)]
            argv += ["--gil"] if gil else []
            self.procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
            )
            self.paths.append(path)

    def wait(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(self.seconds + STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode:
                print(f"  py-spy: {stderr_text(proc)}", file=sys.stderr)


def stderr_text(proc: subprocess.Popen[bytes]) -> str:
    return proc.stderr.read().decode(errors="replace").strip()[-500:] if proc.stderr else ""


def profile_summary(path: Path, seconds: float, top: int = 12) -> list[str]:
    """The functions of one raw py-spy profile: busy share, then the top self and total shares.

    Self: samples whose innermost frame is the function. Total: samples with the
    function anywhere on the stack. Shares are of the process's busy samples; busy
    is those samples over the samples a wholly busy process would have given.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + count
    if not total:
        return [f"{path.name}: no samples"]
    busy = total / (Profiles.RATE * seconds)
    out = [f"{path.name}: {total} samples, {100 * busy:.0f}% of the window"]
    for head, counts in (("self", own), ("total", inclusive)):
        out.append(f"  {head}:")
        for f, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"    {100 * n / total:5.1f}%  {f}")
    return out


# ---- one measurement ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    workload: str
    size: int
    placement: str


@dataclass
class Options:
    duration: float
    warmup: float
    load_procs: int
    gets: int = GETS
    gets_seconds: float = GETS_SECONDS
    #: conns: loopback source addresses (0: one per helper when there are several)
    source_addrs: int = 0
    #: conns: most clients per helper process (its descriptors)
    conns_per_proc: int = benchload.CONNS_PER_PROC
    #: --py-spy: record a profile of every server process of each pair row here
    profile: Path | None = None
    profile_gil: bool = False
    #: connections a server must take: python -m matchmaker's --max-clients, a peer's limits
    max_clients: int = 10000


def usage_fields(u: benchload.Usage) -> dict[str, Any]:
    return {
        "load_share": round(u.load_share, 4),
        "server_cores": round(u.server / u.wall, 3) if u.wall else 0.0,
        "load_cores": round(u.load / u.wall, 3) if u.wall else 0.0,
        "idle": round(u.idle, 4),
        "cores_by_process": u.by_process,
        "load_kernel_share": round(u.load_system / u.load, 3) if u.load else 0.0,
        "other_cores": round(u.others / u.wall, 3) if u.wall else 0.0,
    }


def pair_rows(
    job: Job, label: str, result: benchload.PairsResult, run: dict[str, Any]
) -> list[Row]:
    counts = result.counts
    window = counts["window_ns"] / 1e9
    run.update(
        lost=counts["lost"],
        out_of_order=counts["ooo"],
        errors=counts["errors"],
        unfinished=counts["unfinished"],
        samples=len(result.samples),
        seconds=window,
        pair_min=counts["pair_min"],
        pair_max=counts["pair_max"],
        **usage_fields(result.usage),
    )
    qs = {"pingpong": (50, 99, 99.9), "stream": (50, 99), "churn": (50, 99)}[job.workload]
    lat = latencies_ms(result.samples, qs)
    rows = [Row(job.workload, job.size, job.placement, label, "rate", counts["ops"] / window,
                UNITS[job.workload], run, first=True)]  # fmt: skip
    for q in qs:
        name = f"p{q:g}"
        rows.append(Row(job.workload, job.size, job.placement, label, name, lat[q], "ms", run))
    if job.workload == "pingpong":  # work per CPU: every server process, the same window
        cpu = result.usage.server
        per_cpu = counts["ops"] / cpu if cpu > 0 else math.nan
        rows.append(Row(job.workload, job.size, job.placement, label, PER_CPU, per_cpu, "rt/cpu-s",
                        run))  # fmt: skip
    return rows


def conns_rows(
    job: Job, label: str, result: benchload.ConnsResult, run: dict[str, Any]
) -> list[Row]:
    lat = latencies_ms(result.samples, (50, 99))
    lost = result.failed + result.bad + (result.entries != result.ok)
    run.update(
        lost=lost,
        out_of_order=0,
        errors=result.failed + result.bad,
        connected=result.ok,
        failed=result.failed,
        entries=result.entries,
        rss_before=result.rss_before,
        rss_after=result.rss_after,
        pss_after=result.pss_after,
        samples=len(result.samples),
        **usage_fields(result.usage),
    )
    if result.by_process:
        run.update(
            memory_by_process=result.by_process,
            load_helpers=result.helpers,
            source_addrs=result.sources,
        )
    w, n, p = job.workload, job.size, job.placement
    per_client = (result.rss_after - result.rss_before) / max(result.ok, 1)
    get = result.request.lower()
    rate = result.ok / result.connect_seconds if result.connect_seconds else math.nan
    rows = [
        Row(w, n, p, label, "connect", result.connect_seconds, "s", run, first=True),
        Row(w, n, p, label, "rss", result.rss_after / 1e6, "MB", run),
        Row(w, n, p, label, "rss/client", per_client / 1e3, "kB", run),
        Row(w, n, p, label, "pss", result.pss_after / 1e6, "MB", run),
        Row(w, n, p, label, f"{get} p50", lat[50], "ms", run),
        Row(w, n, p, label, f"{get} p99", lat[99], "ms", run),
    ]
    if result.by_process:  # a fleet: the rate at which the fleet got its WELCOMEs
        rows.insert(1, Row(w, n, p, label, "connect rate", rate, "conn/s", run))
        rows.insert(5, Row(w, n, p, label, "pss/client", result.pss_after / n / 1e3, "kB", run))
    return rows


def measure(
    job: Job, spec: ServerSpec, opts: Options, exe: Path, workdir: Path
) -> tuple[list[Row], int]:
    """Run ``job`` on a fresh server; the rows, and how many server processes held clients.

    No rows when the server cannot give that placement (cross on one process).
    """
    if spec.hosts > 1:
        return measure_hosts(job, spec, opts, exe, workdir)
    if spec.peer:
        return measure_peer(job, spec, opts, exe, workdir)
    if job.workload == "flood":
        return measure_flood(job, spec, opts, exe, workdir), 0
    server = Server(spec, workdir)
    run: dict[str, Any] = {"command": " ".join(shlex.quote(a) for a in server.argv)}
    try:
        if job.workload == "conns":
            fleet = benchload.plan_fleet(
                job.size, opts.load_procs, opts.source_addrs, opts.conns_per_proc
            )
            tag = f"{spec.label}-conns{job.size}"
            if opts.profile is not None:  # every child up and named before py-spy looks
                benchload.settled_rss(server.host, server.port, server.pid)
            seconds = opts.warmup + opts.duration
            roles = ("matchmaker", "worker", "acceptor")  # the acceptor works here too
            spy = Profiles(opts.profile, tag, server.pid, seconds, opts.profile_gil, roles)
            if fleet == [benchload.Share(job.size, "-")]:
                got = benchload.run_conns(
                    exe, server.host, server.port, server.pid, job.size, workdir, opts.gets,
                    opts.gets_seconds,
                )  # fmt: skip
            else:
                got = benchload.run_conns_fleet(
                    exe, server.host, server.port, server.pid, fleet, workdir, opts.gets,
                    opts.gets_seconds,
                )  # fmt: skip
            spy.wait()
            if got.log:
                print(f"  load generator: {got.log}", file=sys.stderr)
            return conns_rows(job, spec.label, got, run), 0
        pairset = benchload.open_pairs(
            server.host,
            server.port,
            server.pid,
            job.size,
            job.placement,
            session=job.workload != "churn",
        )
        if not pairset.pairs:
            return [], pairset.holders
        tag = f"{spec.label}-{job.workload}{job.size}{job.placement}"
        spy = Profiles(opts.profile, tag, server.pid, opts.warmup + opts.duration, opts.profile_gil)
        try:
            result = benchload.run_pairs(
                exe,
                job.workload,
                pairset,
                server.pid,
                opts.warmup,
                opts.duration,
                workdir,
                opts.load_procs,
            )
        finally:
            spy.wait()
            pairset.close()
        if result.log:
            print(f"  load generator: {result.log}", file=sys.stderr)
        return pair_rows(job, spec.label, result, run), pairset.holders
    except Exception:
        print(f"  server log ({server.log_path}):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        status = server.stop()
        if status not in (0, -signal.SIGINT, 130):
            print(f"  {spec.label} exited with status {status}", file=sys.stderr)


def peer_runs(job: Job) -> bool:
    """Whether a peer (IRC) has this row: pingpong and stream pairs in its one process,
    and conns; see PEER_NOTES for the rest."""
    if job.workload == "conns":
        return True
    return job.workload in benchload.IRC_MODES and job.placement == "same"


def measure_peer(
    job: Job, spec: ServerSpec, opts: Options, exe: Path, workdir: Path
) -> tuple[list[Row], int]:
    """Run ``job`` on a fresh IRC server ``spec.peer``, over IRC; a peer is one process.

    Conns rows have no ``get`` metrics (IRC has no GET).
    """
    server = ircpeers.PeerServer(spec.peer, opts.max_clients, parent=workdir)
    run: dict[str, Any] = {"command": server.command}
    try:
        if job.workload == "conns":
            got = ircpeers.run_conns(exe, server, job.size, workdir)
            if got.log:
                print(f"  load generator: {got.log}", file=sys.stderr)
            rows = conns_rows(job, spec.label, got, run)
            return [r for r in rows if not r.metric.startswith("get ")], 1
        pairset = ircpeers.open_pairs(server.host, server.port, job.size)
        try:
            result = benchload.run_pairs(
                exe, job.workload, pairset, server.pid, opts.warmup, opts.duration, workdir,
                opts.load_procs, irc=True,
            )  # fmt: skip
        finally:
            pairset.close()
        if result.log:
            print(f"  load generator: {result.log}", file=sys.stderr)
        return pair_rows(job, spec.label, result, run), 1
    except Exception:
        print(f"  {spec.peer} log ({server.dir}):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if server.stop() is None:
            print(f"  {spec.label} did not exit after SIGKILL", file=sys.stderr)


def measure_flood(job: Job, spec: ServerSpec, opts: Options, exe: Path, workdir: Path) -> list[Row]:
    """The pairs' p99 alone, beside a flooder, and beside one with ``--rate 0``; each on a
    fresh one-worker server with the default pacing (``FLOOD_FLAGS``)."""
    from matchmaker.config import DEFAULT_BURST, DEFAULT_RATE

    paced = ("--rate", f"{DEFAULT_RATE:g}", "--burst", str(DEFAULT_BURST))
    runs = (("alone", "paced", paced), ("flooded", "flood", paced), ("rate 0", "flood", ()))
    rows: list[Row] = []
    p99: dict[str, float] = {}
    run: dict[str, Any] = {}
    for name, mode, flags in runs:
        argv = (*spec.argv, *FLOOD_FLAGS, *flags)
        server = Server(ServerSpec(spec.label, argv), workdir)
        command = " ".join(shlex.quote(a) for a in server.argv)
        try:
            flooders = int(mode == "flood")
            pairset = benchload.open_pairs(
                server.host, server.port, server.pid, job.size + flooders, "same", session=True
            )
            try:
                result = benchload.run_pairs(
                    exe, mode, pairset, server.pid, opts.warmup, opts.duration, workdir
                )
            finally:
                pairset.close()
        except Exception:
            print(f"  server log ({server.log_path}):\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()
        if result.log:
            print(f"  load generator: {result.log}", file=sys.stderr)
        counts = result.counts
        for key in ("lost", "ooo", "errors"):
            run[key] = run.get(key, 0) + counts[key] + (counts["flood_ooo"] if key == "ooo" else 0)
        run[f"command {name}"] = command
        p99[name] = latencies_ms(result.samples, (99,))[99]
        window = counts["window_ns"] / 1e9
        rows.append(Row(job.workload, job.size, "same", "w1", f"p99 {name}", p99[name], "ms", run))
        if flooders:
            rate = counts["flood_recv"] / (window + opts.warmup)
            rows.append(Row(job.workload, job.size, "same", "w1", f"flooder {name}", rate,
                            "lines/s", run))  # fmt: skip
    run.update(lost=run.pop("lost"), out_of_order=run.pop("ooo"), errors=run.pop("errors"))
    for name in ("flooded", "rate 0"):
        times = ratio(p99[name], p99["alone"])
        value = times if times is not None else math.nan
        rows.append(Row(job.workload, job.size, "same", "w1", f"x alone {name}", value, "x", run))
    rows[0].first = True
    return rows


def flood_target(rows: list[Row]) -> Target | None:
    """The issue's flood target, if the flood rows were measured."""
    found = [r for r in rows if r.workload == "flood" and r.metric == "x alone flooded"]
    if not found:
        return None
    r = found[0]
    return Target(
        f"flood {r.size}: p99 beside a flooder <= {FLOOD_BOUND:g}x p99 alone (default --rate)",
        f"{fmt(r.value)}x",
        r.value <= FLOOD_BOUND,
    )


def measure_hosts(
    job: Job, spec: ServerSpec, opts: Options, exe: Path, workdir: Path
) -> tuple[list[Row], int]:
    """Run ``job`` on a fresh Redis and ``spec.hosts`` fresh servers sharing it.

    Pairs have their two ends on two hosts; conns clients are spread evenly over the
    hosts. Rows have placement ``hosts``; CPU, RSS and PSS include Redis's process,
    and the run carries Redis's memory and per-command statistics.
    """
    cluster = Cluster(spec, workdir)
    run: dict[str, Any] = {"command": cluster.command}
    try:
        if job.workload == "conns":
            cluster.redis.reset()
            got = benchload.run_conns_hosts(
                exe, cluster.endpoints, job.size, workdir, opts.gets, opts.gets_seconds,
                extra={"redis": cluster.redis.pid},
            )  # fmt: skip
            if got.log:
                print(f"  load generator: {got.log}", file=sys.stderr)
            run.update(cluster.redis.stats())
            return conns_rows(Job(job.workload, job.size, HOSTS), spec.label, got, run), 0
        pairset = benchload.open_host_pairs(
            cluster.endpoints, job.size, session=job.workload != "churn"
        )
        tag = f"{spec.label}-{job.workload}{job.size}"
        spy = Profiles(
            opts.profile, tag, cluster.pids, opts.warmup + opts.duration, opts.profile_gil
        )
        try:
            cluster.redis.reset()
            result = benchload.run_pairs(
                exe,
                job.workload,
                pairset,
                cluster.pids,
                opts.warmup,
                opts.duration,
                workdir,
                opts.load_procs,
            )
            run.update(cluster.redis.stats())
        finally:
            spy.wait()
            pairset.close()
        if result.log:
            print(f"  load generator: {result.log}", file=sys.stderr)
        rows = pair_rows(Job(job.workload, job.size, HOSTS), spec.label, result, run)
        return rows, pairset.holders
    except Exception:
        print(f"  server logs:\n{cluster.log_tail()}", file=sys.stderr)
        raise
    finally:
        for status in cluster.stop():
            if status not in (0, -signal.SIGINT, 130):
                print(f"  {spec.label} host exited with status {status}", file=sys.stderr)


# ---- the whole run -----------------------------------------------------------------------


def wait_quiet(bound: float, busy: float = 10.0) -> bool:
    """Wait up to ``bound`` seconds for a second in which the machine is under ``busy``% used.

    Nothing of the bench runs between rows, so whatever uses the CPU then is
    someone else's, and would be noise in the next row.
    """
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=1.0) < busy:
            return True
    return False


def jobs(
    sizes: dict[str, list[int]],
    workloads: Sequence[str],
    placements: Sequence[str] = ("same", "cross"),
) -> list[Job]:
    """Every measurement, in order. With --hosts only ``cross``: a cluster measures it as
    pairs across hosts (``hosts`` rows), the one-host server as pairs across workers."""
    out = []
    for workload in workloads:
        for size in sizes[workload]:
            if workload == "conns":
                out.append(Job(workload, size, "-"))
            elif workload == "flood":
                out.append(Job(workload, size, "same"))  # one worker holds them all
            else:
                out.extend(Job(workload, size, p) for p in placements)
    return out


def machine() -> dict[str, str]:
    """The facts docs/PERFORMANCE.md asks for: CPUs, model, Python, commit, date."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout

    # the server's own code only: uncommitted changes there are part of what was measured
    dirty = git("status", "--porcelain", "--", "matchmaker", "workers", "ipc")
    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = sorted({line[3:] for line in dirty.splitlines() if len(line) > 3})
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit + (f" + uncommitted {', '.join(changed)}" if changed else ""),
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--workers", type=int, default=2, help="workers of the server under test (default 2)"
    )
    p.add_argument(
        "--server-cmd",
        help="measure this server instead (shell words; must print 'listening on HOST:PORT', "
        "or take '{port}' in its arguments); with --compare, beside --workers N (an older "
        "checkout, say), and the targets stay --workers N's",
    )
    p.add_argument(
        "--server-args",
        default="",
        help="extra flags for every python -m matchmaker run, e.g. '--loop asyncio' (default none)",
    )
    p.add_argument("--compare", action="store_true", help="ref, --workers 1 and --workers N")
    p.add_argument("--ref", action="store_true", help="also run the reference relay, for ratios")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per workload, C=1000")
    p.add_argument("--duration", type=float, help="measured seconds per workload (default 3)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 0.5)")
    p.add_argument(
        "--workloads",
        help=f"which workloads, in order (default {','.join(WORKLOADS)}; "
        "with --hosts pingpong,stream,conns)",
    )
    p.add_argument("--pingpong", type=csv_ints, help="pair counts (default 1,32,256; --hosts 32)")
    p.add_argument("--stream", type=csv_ints, help="pair counts (default 1,32; --hosts 32)")
    p.add_argument("--churn", type=csv_ints, help="pair counts (default 1,32; --hosts 32)")
    p.add_argument(
        "--conns", type=csv_ints, help="idle client counts (default 1000,10000; --hosts 10000)"
    )
    p.add_argument("--flood", type=csv_ints, help="chatting pairs beside the flooder (default 30)")
    p.add_argument(
        "--hosts",
        type=int,
        default=0,
        help="cross-host mode: N servers sharing a fresh Redis (--redis, --node hK), pairs "
        "with their ends on two hosts, beside one server of the same total workers with "
        "--migrate off (pairs across its workers) (default 0: off)",
    )
    p.add_argument(
        "--host-workers", type=int, default=1, help="with --hosts: workers of each host (default 1)"
    )
    p.add_argument(
        "--gets",
        type=int,
        help=f"GETs timed at C clients (default {GETS}; with --hosts {HOST_GETS})",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each row this many times (interleaved) and keep the median run (default 1)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each row, wait up to this many seconds for other processes to go quiet "
        "(default 0)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="only pingpong 32 and stream 32, plain and over TLS (--tls-port), driven by "
        "scripts/tlsload.py; TLS/plain ratios",
    )
    p.add_argument(
        "--ws",
        action="store_true",
        help="only pingpong 32 and stream 32, plain and over WebSocket (--ws-port), driven by "
        "scripts/tlsload.py; ws/plain ratios",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"also measure these C IRC servers over IRC ({', '.join(ircpeers.PEERS)}; "
        "Debian's packages, started per row with a generated config; repeatable or a "
        "comma list): pingpong, stream and conns rows, x <peer> ratios, and the targets "
        f"against {PEER_GOAL}",
    )
    p.add_argument(
        "--load-procs",
        type=int,
        default=1,
        help="load generator processes (default 1); conns takes more when one would hold "
        f"over {benchload.CONNS_PER_PROC:,} clients or the open-file limit allows fewer: "
        "the bench raises its own soft limit to the hard one, which its helpers inherit",
    )
    p.add_argument(
        "--source-addrs",
        type=int,
        default=0,
        metavar="N",
        help="conns: loopback source addresses the helpers connect from (127.0.0.2, "
        "127.0.0.3, ...), dealt to them in turn; at most "
        f"{benchload.CONNS_PER_SOURCE:,} clients each (the local ports of one address). "
        "Default: one per helper when there are several, else 127.0.0.1. Several helpers "
        "start together, so the connect time and rate are the fleet's; their GET FREE "
        "is timed once all are in",
    )
    p.add_argument(
        "--json",
        "--out",
        type=Path,
        metavar="FILE",
        help="write the JSON lines to FILE ('-': stdout). Without it they go to stdout "
        "when it is piped, and nowhere on a terminal, which gets progress and the table",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles of every server process during each pair row into "
        "DIR, and print their top functions (perturbs the figures: a separate run)",
    )
    p.add_argument(
        "--py-spy-gil",
        action="store_true",
        help="with --py-spy: only samples holding the GIL (Python's CPU, not system calls)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 3.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    hosts = args.hosts
    if args.tls or args.ws:
        return tls_main(args, duration, warmup)
    if hosts == 1 or hosts < 0:
        raise SystemExit("--hosts needs 2 hosts or more")
    if hosts:
        conns = args.conns or [10000]
        default_workloads, default_sizes = "pingpong,stream,conns", [32]
    else:
        conns = args.conns or ([1000] if args.quick else [1000, 10000])
        default_workloads, default_sizes = ",".join(WORKLOADS), []
    workloads = [w for w in (args.workloads or default_workloads).split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))}")
    try:
        peers = ircpeers.parse_peers(args.peer)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if peers and hosts:
        raise SystemExit("--peer measures one host: not with --hosts")
    installed = [p for p in peers if ircpeers.find_binary(p)]
    missing = [ircpeers.not_installed(p) for p in peers if p not in installed]
    for text in missing:
        print(text, file=sys.stderr)
    if peers and not installed:
        return 2

    # the helpers inherit it; past the hard limit, conns is split over more of them
    limit = benchload.raise_fd_limit(max(conns) + FD_MARGIN)
    per_proc = min(benchload.CONNS_PER_PROC, limit - FD_MARGIN)
    if hosts and max(conns) + FD_MARGIN > limit:  # one helper per host
        capped = [min(c, limit - FD_MARGIN) for c in conns]
        print(f"open-file limit {limit}: conns capped to {capped}", file=sys.stderr)
        conns = capped
    fleets: dict[int, list[benchload.Share]] = {}
    if "conns" in workloads and not hosts:
        for c in conns:
            try:
                fleets[c] = benchload.plan_fleet(c, args.load_procs, args.source_addrs, per_proc)
            except ValueError as exc:
                raise SystemExit(f"--conns {c}: {exc}") from None
            if len(fleets[c]) > 1 or fleets[c][0].source != "-":
                print(
                    f"conns {c:,}: {len(fleets[c])} load generator processes of at most "
                    f"{max(f.clients for f in fleets[c]):,} clients (open-file limit {limit}), "
                    f"from {len({f.source for f in fleets[c]})} source addresses "
                    f"({fleets[c][0].source}...)",
                    file=sys.stderr,
                )
    max_clients = max(10000, max(conns) + 16)

    extra = shlex.split(args.server_args)
    if args.server_cmd:
        target = ServerSpec(CMD, tuple(shlex.split(args.server_cmd)))
    else:
        target = matchmaker_spec(args.workers, max_clients, extra)
    specs = [target]
    one_host = target
    if hosts:
        if args.server_cmd or args.compare or args.ref:
            raise SystemExit("--hosts measures python -m matchmaker only, without ref")
        # the same total workers on one host, every line relayed by its matchmaker
        one_host = matchmaker_spec(
            hosts * args.host_workers, max_clients, [*extra, "--migrate", "off"]
        )
        one_host = ServerSpec(f"{one_host.label}-relay", one_host.argv)
        target = matchmaker_spec(args.host_workers, max_clients, extra)
        target = ServerSpec(f"{hosts}h-w{args.host_workers}", target.argv, hosts=hosts)
        specs = [one_host, target]
    elif args.compare:
        specs = [ref_spec(), matchmaker_spec(1, max_clients, extra), target]
        if args.server_cmd:  # beside this checkout's --workers N, whose targets they stay
            target = matchmaker_spec(args.workers, max_clients, extra)
            specs.insert(2, target)
        specs = list({s.label: s for s in specs}.values())
    elif args.ref:
        specs = [ref_spec(), target]
    specs += [ServerSpec(p, (), peer=p) for p in installed]

    facts = machine()
    opts = Options(duration, warmup, args.load_procs)
    opts.gets = args.gets or (HOST_GETS if hosts else GETS)
    opts.gets_seconds = HOST_GETS_SECONDS if hosts else GETS_SECONDS
    opts.profile, opts.profile_gil = args.py_spy, args.py_spy_gil
    opts.max_clients = max_clients
    opts.source_addrs, opts.conns_per_proc = args.source_addrs, per_proc
    sizes = {
        "pingpong": args.pingpong or default_sizes or [1, 32, 256],
        "stream": args.stream or default_sizes or [1, 32],
        "churn": args.churn or default_sizes or [1, 32],
        "conns": conns,
        "flood": args.flood or [30],
    }
    workdir = benchload.scratch()
    exe = benchload.build_helper(workdir)
    rows: list[Row] = []
    single: set[str] = set()  # servers seen to hold every client in one process
    failed: list[str] = []
    todo = jobs(sizes, workloads, placements=("cross",) if hosts else ("same", "cross"))
    started = time.monotonic()
    for n, job in enumerate(todo, 1):
        runs: dict[str, list[list[Row]]] = {}
        for rep in range(args.repeat):
            for spec in specs:
                if job.placement == "cross" and spec.label in single:
                    continue
                if job.workload == "flood" and spec.label in (REF, CMD):
                    continue  # the flooder and the pacing are python -m matchmaker's
                if spec.peer and not peer_runs(job):
                    continue  # no IRC equivalent, or one process: PEER_NOTES
                print(
                    f"[{n}/{len(todo)} {time.monotonic() - started:5.0f}s] "
                    f"{job.workload} {job.size} {job.placement} on {spec.label}"
                    + (f" (repeat {rep + 1}/{args.repeat})" if args.repeat > 1 else ""),
                    file=sys.stderr,
                    flush=True,
                )
                if args.quiet_wait and not wait_quiet(args.quiet_wait):
                    print("  the machine is still busy; measuring anyway", file=sys.stderr)
                try:
                    got, holders = measure(job, spec, opts, exe, workdir)
                except Exception as exc:  # one broken run must not hide the others
                    print(f"  FAILED: {exc!r}", file=sys.stderr)
                    failed.append(
                        f"{job.workload} {job.size} {job.placement} on {spec.label}: {exc}"
                    )
                    continue
                if job.workload not in ("conns", "flood") and holders == 1:
                    single.add(spec.label)
                if got and got[0].run.get("lost"):
                    print(f"  LOST or missing lines: {got[0].run}", file=sys.stderr)
                if got:
                    runs.setdefault(spec.label, []).append(got)
        for spec in specs:
            if spec.label in runs:
                chosen = median_run(runs[spec.label])
                for r in chosen:
                    r.run.update(facts)
                rows.extend(chosen)

    add_ratios(rows)
    if installed:
        add_peer_ratios(rows, installed)
    if hosts:
        add_host_ratios(rows, one_host.label)
    json_to = json_destination(args.json, sys.stdout.isatty())
    if json_to == "-":
        for r in rows:
            print(json.dumps(r.json(), sort_keys=True))
    elif json_to is not None:
        with open(json_to, "w") as out:
            for r in rows:
                print(json.dumps(r.json(), sort_keys=True), file=out)
    print()
    print(f"bench: {' '.join(shlex.quote(a) for a in sys.argv[1:]) or '(defaults)'}")
    print(
        f"machine: {facts['cpus']} CPUs, {facts['cpu']}, Python {facts['python']}, "
        f"Linux {facts['kernel']}; commit {facts['commit']}; {facts['date']}"
    )
    print(
        f"{duration:g} s measured after {warmup:g} s warmup per row; "
        f"servers: {', '.join(s.label for s in specs)}; load generator: C, "
        f"{args.load_procs} process(es)"
    )
    print(
        f"python -m matchmaker runs with {' '.join(UNLIMITED)} (throughput rows) and "
        f"{' '.join(FLOOD_FLAGS)} with the default --rate/--burst, then --rate 0 (flood rows)"
    )
    if installed:
        print(
            "peers (scripts/ircpeers.py): "
            + ", ".join(f"{p} ({ircpeers.version(p)})" for p in installed)
            + "; over IRC, flood limits and penalties off, no per-address limits, "
            "no DNS or ident lookups"
        )
    print()
    print(table(rows))
    if installed:
        notes = [
            PEER_NOTES[key]
            for key, workload in (("churn", "churn"), ("flood", "flood"), ("get", "conns"),
                                  ("window", "conns"))
            if workload in workloads
        ]  # fmt: skip
        for text in notes:
            print(f"  {text}")
    goal_server = target.label
    if hosts:
        print()
        print(
            f"Redis, per {goal_server} row (commands counted from pairing, or from the "
            "first connect, to the end):"
        )
        for r in rows:
            if r.first and r.server == goal_server and "redis_commands" in r.run:
                top = list(r.run["redis_commands"].items())[:5]
                print(
                    f"  {r.workload} {r.size}: RSS {r.run['redis_rss'] / 1e6:.1f} MB, "
                    f"used {r.run['redis_used_memory'] / 1e6:.1f} MB, "
                    f"cores {r.run['cores_by_process'].get('redis redis-server', 0):.2f}, "
                    f"{r.run.get('redis_reads') or 0:,} socket reads; "
                    + ", ".join(f"{c} {n:,} x {us:g} us" for c, (n, us) in top)
                )
        print()
        print(f"targets ({goal_server} vs {one_host.label}):")
        for t in host_targets(rows, goal_server):
            mark = {True: "PASS", False: "FAIL", None: "  - "}[t.ok]
            print(f"  {mark}  {t.goal}: {t.measured}")
    if not hosts:  # those that need the reference say "no ref" without it
        print()
        print(f"targets ({goal_server} vs {REF}):")
        for t in targets(rows, goal_server):
            mark = {True: "PASS", False: "FAIL", None: "  - "}[t.ok]
            print(f"  {mark}  {t.goal}: {t.measured}")
    if PEER_GOAL in installed:
        print()
        print(f"targets ({goal_server} vs {PEER_GOAL}):")
        for t in peer_targets(rows, goal_server):
            mark = {True: "PASS", False: "FAIL", None: "  - "}[t.ok]
            print(f"  {mark}  {t.goal}: {t.measured}")
    memory = memory_beside(rows, [s.label for s in specs])
    if installed and memory:
        print()
        print("memory beside the peers (RSS and PSS of every process of each server):")
        for line in memory:
            print(f"  {line}")
    fleets_memory = [r for r in rows if r.first and "memory_by_process" in r.run]
    for r in fleets_memory:
        print()
        print(
            f"conns {r.size:,} on {r.server}: {r.run['load_helpers']} load generator processes "
            f"from {r.run['source_addrs']} source addresses; memory per server process:"
        )
        for name, (rss, pss) in r.run["memory_by_process"].items():
            print(f"  {rss / 1e6:7.1f} MB RSS  {pss / 1e6:7.1f} MB PSS  {name}")
    flood = flood_target(rows)
    if flood is not None:
        mark = {True: "PASS", False: "FAIL", None: "  - "}[flood.ok]
        print()
        print(f"  {mark}  {flood.goal}: {flood.measured}")
    shares = [r.run["load_share"] for r in rows if r.first and "load_share" in r.run]
    if shares:
        print()
        print(
            f"load generator CPU share (of server + load CPU): "
            f"{100 * min(shares):.0f}%..{100 * max(shares):.0f}%, "
            f"mean {100 * sum(shares) / len(shares):.0f}%"
        )
    noisy = [r for r in rows if r.first and len(r.run.get("repeats", ())) > 1]
    noisy = [r for r in noisy if max(r.run["repeats"]) > 1.25 * min(r.run["repeats"])]
    if noisy:
        print()
        print("repeats that differ by more than 25% (the table shows the median run):")
        for r in noisy:
            values = " / ".join(fmt(v) for v in r.run["repeats"])
            print(f"  {r.workload} {r.size} {r.placement} {r.server} {r.metric}: {values} {r.unit}")
    if args.py_spy:
        summary = [
            line
            for path in sorted(args.py_spy.glob("*.txt"))
            if path.name != "summary.txt"
            for line in profile_summary(path, warmup + duration)
        ]
        (args.py_spy / "summary.txt").write_text("\n".join(summary) + "\n")
        print()
        print(f"profiles in {args.py_spy} (summary.txt):")
        print("\n".join(summary))
    if single:
        print(f"cross-worker rows: n/a for {', '.join(sorted(single))} (one process holds all)")
    for f in failed:
        print(f"FAILED: {f}")
    for text in missing:
        print(text)
    if json_to is None:
        print("JSON lines: not written (--json FILE writes them; --json - to stdout)")
    elif json_to != "-":
        print(f"JSON lines: {json_to}")
    bad = [r for r in rows if r.first and (r.run.get("lost") or r.run.get("out_of_order"))]
    if bad or failed:
        print(f"server logs: {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def json_destination(asked: Path | None, terminal: bool) -> Path | str | None:
    """Where the JSON lines go: the file asked for, ``"-"`` for stdout (asked, or stdout
    is piped: a script reads them), or nowhere (a terminal gets the table instead)."""
    if asked is not None:
        return "-" if str(asked) == "-" else asked
    return None if terminal else "-"


def tls_main(args: argparse.Namespace, duration: float, warmup: float) -> int:
    """``--tls`` (``--ws``): plain and TLS (WebSocket) rows from one server, the TLS/plain
    (ws/plain) ratio beside each."""
    import asyncio
    import ssl

    import trustme

    from scripts import tlsload

    workdir = benchload.scratch()
    ca = trustme.CA()
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    issued = ca.issue_cert("localhost")
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    extra = ["--tls-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]
    other = "tls"
    if args.ws:  # the WebSocket port, plain (ws://)
        extra, other = ["--ws-port", "0"], "ws"
    spec = matchmaker_spec(args.workers, 10000, [*extra, *shlex.split(args.server_args)])
    rows: list[Row] = []
    for workload, unit in (("pingpong", "rt/s"), ("stream", "lines/s")):
        for placement in ("same", "cross"):
            for label in ("plain", other):
                tls = trusting if label == "tls" else None
                rates = []
                for _ in range(args.repeat):
                    server = Server(spec, workdir)  # a fresh one for every run, as above
                    try:
                        ports = {"plain": server.port, "tls": server.tls_port, "ws": server.ws_port}
                        tally, took = asyncio.run(
                            tlsload.run(server.host, ports[label], server.pid, tls, workload, 32,
                                        placement, warmup, duration, web=label == "ws")
                        )  # fmt: skip
                    finally:
                        server.stop()
                    if tally.bad:
                        print(f"  {tally.bad} lines lost or out of order", file=sys.stderr)
                        return 1
                    rates.append(tally.done / took)
                    lat = latencies_ms(tally.latencies, (50, 99))
                rate = sorted(rates)[len(rates) // 2]
                print(f"{workload} 32 {placement} {label}: {fmt(rate)} {unit}, "
                      f"p50 {lat[50]:.2f} ms, p99 {lat[99]:.2f} ms", file=sys.stderr)  # fmt: skip
                rows.append(Row(workload, 32, placement, label, "rate", rate, unit))
                rows.append(Row(workload, 32, placement, label, "p99", lat[99], "ms"))
    print()
    print(f"bench: {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(f"{duration:g} s measured after {warmup:g} s warmup per row; load: scripts/tlsload.py")
    head = ("workload", "placement", "metric", "plain", other, f"{other}/plain")
    print(f"{head[0]:<12} {head[1]:<9} {head[2]:<6} {head[3]:>10} {head[4]:>10} {head[5]:>9}")
    for r in rows:
        if r.server != "plain":
            continue
        t = next(x for x in rows if x.server == other and x.key == r.key)
        print(f"{r.workload + ' 32':<12} {r.placement:<9} {r.metric:<6} {fmt(r.value):>10} "
              f"{fmt(t.value):>10} {fmt_ratio(ratio(t.value, r.value)):>9}")  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
