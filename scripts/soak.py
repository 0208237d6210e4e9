"""Soak: start the server, load it with people and bots, sample every process, check every rule.

``python -m scripts.soak [--workers N] [--clients C] [--duration S]`` (or
``scripts/soak.sh``) runs on 127.0.0.1 only, stops by itself, prints a summary
and exits non-zero on any rule violation, descriptor leak, cut client,
restarted or crashed process, or unclean shutdown. The defaults suit a 2-core
machine: one worker per core and 200 users, half of them bots.

With ``--chaos`` it also kills and stops the server's children at random during
the load (``scripts/chaos.py``). Then a child may be restarted as often as it
was killed, and the clients a killed process held may be cut off
(``Transcript.severed``); nothing else changes: every other connection must
keep every rule, and the restarted server must end with the descriptors it
started with, and stop cleanly.

With ``--hosts N`` (N >= 2) it starts its own ``redis-server``
(``scripts/redisproc.py``) and N servers sharing their client table in it
(``--redis URL --node hN``), deals the users round robin over them, and checks
every host's transcripts together, as one population: ids are the cluster's,
so a session may join clients of two hosts. The summary counts those sessions
and shows Redis's memory and CPU beside each host's processes; the chaos, if
on, runs against every host, each with its own draws.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import IO

import psutil
import redis

from scripts.chaos import ROLES, SIGNALS, Chaos, ChaosPlan, role
from scripts.loadgen import Load, Plan, Tally, load
from scripts.redisproc import RedisProcess, RedisUsage
from scripts.rules import CUTS, Report, Transcript, check
from scripts.sampler import PREFIX, Sample, Sampler, by_title, server_processes

#: How long the server may take to listen, to start its children, and to stop.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
#: Descriptors a process may hold at the end beyond what it held before the load.
FD_SLACK = 2
#: How long the descriptors of closed clients may take to be released.
SETTLE = 5.0
#: Soak pacing: busy enough to keep the cores working, light enough to check in seconds.
BOT_PAUSE = (0.002, 0.02)
PERSON_PAUSE = (0.1, 0.6)
#: Seconds at the end of the load left without chaos: the restarted server serves the
#: last operations and the closes undisturbed.
CHAOS_QUIET = 3.0
#: Seconds within which a client that was moving when its worker was killed lands and
#: is closed: the replacement worker starts and picks it up first.
LANDING = 5.0


@dataclass
class HostOutcome:
    """One server: the only one, or one host of the cluster."""

    #: ``--node`` of a cluster's host (``h1``, ...); empty for the one server
    name: str = ""
    port: int = 0
    samples: list[Sample] = field(default_factory=list)
    start: dict[str, int] = field(default_factory=dict)  # fds by title, before the load
    end: dict[str, int] = field(default_factory=dict)  # fds by title, after every client left
    exit_status: int | None = None
    stop_seconds: float = 0.0
    survivors: list[str] = field(default_factory=list)
    chaos: Chaos | None = None

    def label(self, text: str) -> str:
        """``text``, said of this host when there are several."""
        return f"{self.name}: {text}" if self.name else text


@dataclass
class RedisOutcome:
    """The cluster's ``redis-server``: what it used, and how it ended."""

    url: str
    #: at the start and at the end of the load
    before: RedisUsage | None = None
    after: RedisUsage | None = None
    samples: list[Sample] = field(default_factory=list)
    start_fds: int = 0
    end_fds: int = 0
    #: keys left once every host had stopped
    left: list[str] = field(default_factory=list)
    exit_status: int | None = None
    failure: str = ""


@dataclass
class Outcome:
    """Everything the summary reports."""

    plan: Plan
    workers: int
    hosts: list[HostOutcome] = field(default_factory=list)
    redis: RedisOutcome | None = None
    load: Load | None = None
    report: Report | None = None
    check_seconds: float = 0.0
    load_cpu: float = 0.0  # percent of one core used by this process during the load
    load_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    chaos: bool = False
    #: severed connections that no killed process held: moving when their worker died
    moving: int = 0
    #: sessions whose two ends were clients of different hosts
    across: int = 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/soak.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="default: CPU count")
    p.add_argument("--clients", type=int, default=200, help="simulated users (default 200)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--seed", type=int, default=1, help="seed of every user's choices")
    p.add_argument("--bots", type=float, default=0.5, help="share of bots (default 0.5)")
    p.add_argument(
        "--hosts",
        type=int,
        default=1,
        help="servers; 2 or more: a cluster sharing its own redis-server (default 1)",
    )
    p.add_argument(
        "--node-ttl",
        type=float,
        default=5.0,
        help="with --hosts: each server's --node-ttl, in seconds (default 5, the server's; "
        "with --chaos keep it above 4/3 of the longest stop, 2 s, or a stopped matchmaker's "
        "host is reaped)",
    )
    p.add_argument(
        "--transcripts",
        metavar="FILE",
        help="write every connection's transcript to FILE, one JSON object a line",
    )
    p.add_argument(
        "--logs",
        metavar="DIR",
        help="write each server's whole log to DIR (server.log; with --hosts, h1.log, ...)",
    )
    c = p.add_argument_group("chaos", "kill and stop the server's children during the load")
    c.add_argument("--chaos", action="store_true", help="turn the chaos on (seeded by --seed)")
    c.add_argument(
        "--chaos-interval",
        type=float,
        nargs=2,
        default=(2.0, 4.0),
        metavar=("LOW", "HIGH"),
        help="seconds between two actions (default 2 4)",
    )
    c.add_argument(
        "--chaos-pause",
        type=float,
        nargs=2,
        default=(0.2, 2.0),
        metavar=("LOW", "HIGH"),
        help="seconds a SIGSTOPped child stays stopped before its SIGCONT (default 0.2 2)",
    )
    c.add_argument(
        "--chaos-actions", type=int, default=12, help="at most this many actions (default 12)"
    )
    c.add_argument(
        "--chaos-roles",
        default=",".join(ROLES),
        help=f"children to pick from (default {','.join(ROLES)})",
    )
    c.add_argument(
        "--chaos-signals",
        default=",".join(SIGNALS),
        help="kill (SIGKILL), stop (SIGSTOP, then SIGCONT), or both (the default)",
    )
    args = p.parse_args(argv)
    if args.hosts < 1:
        p.error("--hosts: at least 1")
    for name, allowed in (("roles", ROLES), ("signals", SIGNALS)):
        value = getattr(args, f"chaos_{name}")
        if not value or not set(value.split(",")) <= set(allowed):
            p.error(f"--chaos-{name}: a comma-separated list of {', '.join(allowed)}")
    return args


def chaos_plan(args: argparse.Namespace, host: str = "") -> ChaosPlan:
    return ChaosPlan(
        seed=args.seed,
        interval=tuple(args.chaos_interval),
        pause=tuple(args.chaos_pause),
        actions=args.chaos_actions,
        duration=max(0.0, args.duration - CHAOS_QUIET),
        roles=tuple(args.chaos_roles.split(",")),
        signals=tuple(args.chaos_signals.split(",")),
        host=host,
    )


#: Every user connects from 127.0.0.1, a few hundred at once: the per-address
#: limits are off. Bots send far faster than the default --rate (20 lines a
#: second): paced to it, their backlog would outlast the run, and their last
#: lines the grace a user waits for its close. So the pacing is raised above
#: what a bot sends on average, not turned off: bursts still meet it.
SOAK_FLAGS = ("--max-per-ip", "0", "--accept-rate", "0", "--rate", "200", "--burst", "200")


class Server:
    """``python -m matchmaker`` on 127.0.0.1 and a free port, in its own process group.

    ``flags`` are added to its command line (a cluster's ``--redis``, ``--node``, ...).
    """

    def __init__(self, workers: int, log: IO[bytes], flags: tuple[str, ...] = ()) -> None:
        cmd = [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", "0"]
        cmd += [
            "--workers",
            str(workers),
            *SOAK_FLAGS,
            *flags,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            self.port = self._read_port()
            self.pids = self._wait_children(workers + 2)
        except BaseException:  # a server that did not start is not left running
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"the server did not listen within {START_TIMEOUT}s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the server exited before it listened")
            line += chunk
        text = line.decode().strip()
        if not text.startswith("listening on "):
            raise RuntimeError(f"unexpected first line: {text!r}")
        return int(text.rsplit(":", 1)[1])

    def _wait_children(self, count: int) -> list[int]:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            procs = server_processes(self.proc.pid)
            named = [p for p in procs[1:] if _title(p).startswith(PREFIX)]
            if len(named) >= count:
                return [p.pid for p in procs]
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(named)} of {count} children started")
            time.sleep(0.05)  # polling the process table: there is nothing to wait on

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM; the exit status and how long it took (None: it had to be killed)."""
        known = set(self.pids)  # restarted children too
        self.pids += [p.pid for p in server_processes(self.proc.pid) if p.pid not in known]
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status: int | None = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            status = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return status, time.monotonic() - started

    def survivors(self) -> list[str]:
        """Processes of the server still running a while after it exited."""
        deadline = time.monotonic() + 5.0  # a child may still be on its way out
        while True:
            left = []
            for pid in self.pids:
                try:
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        left.append(p)
                except psutil.NoSuchProcess:
                    pass
            if not left or time.monotonic() > deadline:
                for p in left:
                    p.kill()
                return [f"{p.pid} {_title(p)}" for p in left]
            time.sleep(0.05)  # polling the process table: there is nothing to wait on


def _title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()).strip()
    except psutil.Error:
        return "?"


def fds(samples: list[Sample]) -> dict[str, int]:
    return {s.title: s.fds for s in samples}


def serving(port: int, timeout: float = 30.0) -> None:
    """A client of ``port`` was welcomed, and said goodbye: the server serves (with
    ``--redis``, its matchmaker has joined the shared table, its connections to Redis
    open), so the descriptors counted next are a running server's, not a starting one's."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as probe:
        got = b""
        while b"\n" not in got:
            chunk = probe.recv(256)
            if not chunk:
                raise RuntimeError(f"port {port} closed before its WELCOME")
            got += chunk
        if not got.startswith(b"WELCOME "):
            raise RuntimeError(f"port {port} said {got!r} instead of WELCOME")
        probe.sendall(b"#CLOSE#\n")
        while probe.recv(256):  # BYE, then the server closes
            pass


def settle(sampler: Sampler, start: dict[str, int]) -> dict[str, int]:
    """Descriptors once closed clients are released (or ``SETTLE`` seconds have passed)."""
    deadline = time.monotonic() + SETTLE
    while True:
        now = fds(sampler.sample())
        if all(now.get(t, 0) <= n + FD_SLACK for t, n in start.items()):
            return now
        if time.monotonic() > deadline:
            return now
        time.sleep(0.1)  # polling descriptor counts: there is nothing to wait on


def soak(args: argparse.Namespace, logs: list[IO[bytes]]) -> Outcome:
    """The whole soak; ``logs``: one file per server for its stderr."""
    plan = Plan(
        clients=args.clients,
        ops=0,
        seed=args.seed,
        duration=args.duration,
        bots=args.bots,
        bot_pause=BOT_PAUSE,
        person_pause=PERSON_PAUSE,
    )
    out = Outcome(plan, args.workers, chaos=args.chaos)
    servers: list[Server] = []
    store: RedisProcess | None = None
    try:
        if args.hosts > 1:
            store = RedisProcess()
            out.redis = RedisOutcome(store.url)
        for n, log in enumerate(logs):
            name = f"h{n + 1}" if store is not None else ""
            flags: tuple[str, ...] = ()
            if store is not None:
                flags = ("--redis", store.url, "--node", name, "--node-ttl", f"{args.node_ttl:g}")
            servers.append(Server(args.workers, log, flags))
            out.hosts.append(HostOutcome(name, servers[-1].port))
        run(args, out, servers, store)
    finally:
        for host, server in zip(out.hosts, servers, strict=True):
            host.exit_status, host.stop_seconds = server.stop()
        for host, server in zip(out.hosts, servers, strict=True):
            host.survivors = server.survivors()
        if store is not None:
            finish_redis(store, out)
    assert out.load is not None
    if sys.stderr.isatty():
        print(f"soak: checking {len(out.load.transcripts)} connections against the rules",
              file=sys.stderr, flush=True)  # fmt: skip
    started = time.monotonic()
    out.report = check(out.load.transcripts)
    out.check_seconds = time.monotonic() - started
    port = {h.port: h for h in out.hosts}
    servers_of = out.load.servers
    out.across = sum(port[servers_of[a]] is not port[servers_of[b]] for a, b in out.report.pairs)
    judge(out)
    return out


def run(
    args: argparse.Namespace, out: Outcome, servers: list[Server], store: RedisProcess | None
) -> None:
    """Sample, load (and chaos), settle: everything while the servers run."""
    with ExitStack() as stack:
        samplers = []
        for host, server in zip(out.hosts, servers, strict=True):
            serving(server.port)
            sampler = Sampler(server.proc.pid)
            sampler.start()
            stack.callback(sampler.stop)
            samplers.append(sampler)
            host.start = fds(sampler.samples)
        watcher = None
        if store is not None and out.redis is not None:
            out.redis.before = store.usage()
            watcher = Sampler(store.pid)
            watcher.start()
            stack.callback(watcher.stop)
            out.redis.start_fds = watcher.samples[0].fds
        cpu0, wall0 = time.process_time(), time.monotonic()
        if args.chaos:
            for host, server in zip(out.hosts, servers, strict=True):
                host.chaos = Chaos(server.proc.pid, chaos_plan(args, host.name))
            chaoses = [h.chaos for h in out.hosts if h.chaos is not None]
            halt_on_signals(chaoses)
            for chaos in chaoses:
                chaos.start()
        show = Progress(out.plan.duration) if sys.stderr.isatty() else None
        try:
            ports = [s.port for s in servers]
            out.load = asyncio.run(
                load("127.0.0.1", ports[0] if len(ports) == 1 else ports, out.plan, show)
            )
        finally:
            if show is not None:
                show.done()
            for host in out.hosts:
                if host.chaos is not None:
                    host.chaos.stop()  # every stopped child continued before anything else
        if args.chaos:
            out.moving = sever(out.load, out.hosts)
        out.load_seconds = time.monotonic() - wall0
        out.load_cpu = 100 * (time.process_time() - cpu0) / out.load_seconds
        for host, sampler in zip(out.hosts, samplers, strict=True):
            sampler.stop()
            host.samples = list(sampler.samples)  # the load only: settling would dilute the CPU
        if watcher is not None and out.redis is not None and store is not None:
            watcher.stop()
            out.redis.samples = list(watcher.samples)
            if store.running():
                out.redis.after = store.usage()
            else:
                out.redis.failure = "redis-server exited during the load"
        for host, server in zip(out.hosts, servers, strict=True):
            if server.proc.poll() is not None:
                status = server.proc.poll()
                out.failures.append(
                    host.label(f"the server exited during the load (status {status})")
                )
        for host, sampler in zip(out.hosts, samplers, strict=True):
            host.end = settle(sampler, host.start)
        if watcher is not None and out.redis is not None:
            out.redis.end_fds = sum(s.fds for s in watcher.sample())


class Progress:
    """One line on a terminal's stderr, rewritten each second while the load runs.

    The full rules are judged once the load is over (the checker ties every
    connection's transcript to its partners'); ``violations`` counts what can be
    told as lines arrive (``loadgen.Conn.check``: a line lost, reordered or not
    sent by the partner), and ``cut`` the connections the server cut, which
    fail the soak too. Nothing of it is written when stderr is not a terminal (CI pipes it).
    """

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.shown = False

    def __call__(self, elapsed: float, tally: Tally) -> None:
        line = (
            f"soak: {elapsed:3.0f}/{self.duration:g} s  connections {tally.connections}"
            f"  sessions {tally.connected // 2}  lines sent {tally.sent}"
            f"  relayed {tally.relayed}  errors {tally.errors}  cut {tally.cut}"
            f"  violations {tally.violations}"
        )
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        """End the line, so what follows starts on its own."""
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def finish_redis(store: RedisProcess, out: Outcome) -> None:
    """After every host stopped: note the keys left, then stop Redis and reap it."""
    assert out.redis is not None
    try:
        if store.running():
            out.redis.left = store.keys()
    except redis.RedisError as exc:
        out.redis.failure = out.redis.failure or f"redis-server did not answer KEYS: {exc}"
    finally:
        out.redis.exit_status = store.stop()


def sever(result: Load, hosts: list[HostOutcome]) -> int:
    """Mark the connections a kill cut; how many of them no killed process held.

    Those the killed process held while they were open; and those that were moving
    to or from a killed worker, which no process holds while the socket is in flight:
    the server frees such a client with the worker (README, Faults) and closes it when
    it lands, with ``OUTAGE`` or without a word. Which clients were moving cannot be
    seen from outside, so a connection that was open when a worker was killed and was
    closed by the server without ``BYE`` within ``LANDING`` seconds counts as one; so
    does one closed with ``OUTAGE`` within ``LANDING`` seconds of a matchmaker's kill
    (in flight then, it was in no worker's hello, and its id could be given away).

    Of several hosts, only the kills on the host a connection was made to count for it.
    """
    actions = {h.port: h.chaos.actions if h.chaos is not None else [] for h in hosts}
    moved = 0
    for n, t in enumerate(result.transcripts):
        port, span = result.ports.get(t.uid), result.spans.get(t.uid)
        server = result.servers.get(t.uid)
        if port is None or span is None or server is None:
            continue
        kills = [a for a in actions[server] if a.what == "kill"]
        workers = [a for a in kills if role(a.title) == "worker"]
        matchmakers = [a for a in kills if role(a.title) == "matchmaker"]
        opened, closed = span
        if any(port in a.ports and opened <= a.clock <= closed for a in kills):
            result.transcripts[n] = replace(t, severed=True)
            continue
        last = [text for kind, text in t.events if kind == "recv"][-1:]
        cut = t.closed and not {"BYE", "ERROR SLOW_CONSUMER", "ERROR IDLE"} & set(last)
        if cut and any(opened <= a.clock <= closed <= a.clock + LANDING for a in workers):
            result.transcripts[n] = replace(t, severed=True)
            moved += 1
        elif last == ["OUTAGE"] and any(
            opened <= a.clock <= closed <= a.clock + LANDING for a in matchmakers
        ):
            # handed over late by a stalled worker when the matchmaker died, it was in
            # no worker's hello, and a newcomer took its id first (docs/PROTOCOL.md)
            result.transcripts[n] = replace(t, severed=True)
            moved += 1
    return moved


def judge(out: Outcome) -> None:
    """Everything that makes the soak fail."""
    report = out.report
    assert report is not None
    if report.violations:
        out.failures.append(f"{len(report.violations)} rule violations")
    if report.cut:
        out.failures.append(f"{report.cut} clients cut by the server")
    for host in out.hosts:
        judge_host(host, out.failures)
    if out.redis is not None:
        if out.redis.failure:
            out.failures.append(out.redis.failure)
        if out.redis.exit_status != 0:
            status = "killed" if out.redis.exit_status is None else out.redis.exit_status
            out.failures.append(f"redis-server: exit status {status} after SIGTERM (0 expected)")


def judge_host(host: HostOutcome, failures: list[str]) -> None:
    """What makes one server fail the soak."""
    say = host.label
    for name, n in sorted(host.start.items()):
        if host.end.get(name, 0) > n + FD_SLACK:
            failures.append(say(f"{name}: {host.end[name]} descriptors at the end, {n} at start"))
    actions = host.chaos.actions if host.chaos is not None else []
    kills = Counter(a.title for a in actions if a.what == "kill")
    for name, samples in by_title(host.samples).items():
        restarts = len({s.pid for s in samples}) - 1
        if name.startswith(PREFIX) and restarts > kills[name]:
            failures.append(
                say(f"{name} was restarted {restarts} times during the load, killed {kills[name]}")
            )
    for name in sorted(set(host.start) - set(host.end)):
        failures.append(say(f"{name} is missing at the end"))
    if host.exit_status != 0:
        failures.append(say(f"exit status {host.exit_status} after SIGTERM (0 expected)"))
    if host.survivors:
        failures.append(say(f"processes outlived the server: {host.survivors}"))


def write_transcripts(path: str, result: Load, hosts: bool = False) -> None:
    with open(path, "w") as f:
        for t in result.transcripts:
            port = result.ports.get(t.uid)
            record = {**asdict(t), "port": port, "span": result.spans.get(t.uid)}
            if hosts:  # the server port it connected to: which host
                record["server"] = result.servers.get(t.uid)
            f.write(json.dumps(record))
            f.write("\n")


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def is_cut(t: Transcript) -> bool:
    """Closed by the server with a cut (``rules.CUTS``), not by a kill: as ``Report.cut``."""
    recv = [text for kind, text in t.events if kind == "recv"]
    return bool(recv) and recv[-1] in CUTS and not t.severed


def summary(out: Outcome) -> str:
    plan, report, result = out.plan, out.report, out.load
    assert report is not None and result is not None
    bots = round(plan.clients * plan.bots)
    rules = Counter(v.rule for v in report.violations)
    by_rule = "(" + ", ".join(f"{r} {n}" for r, n in rules.most_common()) + ") " if rules else ""
    cluster = len(out.hosts) > 1
    shape = (
        f"{len(out.hosts)} hosts of {out.workers} workers" if cluster else f"{out.workers} workers"
    )
    lines = [
        f"soak: {shape}, {plan.clients} users ({bots} bots),"
        f" {plan.duration:g} s, seed {plan.seed}; load ran {result.seconds:.1f} s",
        f"server flags: {' '.join(SOAK_FLAGS)}",
    ]
    if cluster:
        per_host = Counter(result.servers.values())
        lines.append(
            "hosts: "
            + ", ".join(f"{h.name} :{h.port} ({per_host[h.port]} connections)" for h in out.hosts)
            + f"; sharing {out.redis.url if out.redis else '?'}"
        )
    lines += [
        f"connections {report.connections}   sessions {report.sessions}"
        f"   lines sent {report.lines_sent}   lines relayed (MSG) {report.messages}",
    ]
    if cluster:
        share = 100 * out.across / report.sessions if report.sessions else 0.0
        lines.append(f"sessions across hosts: {out.across} of {report.sessions} ({share:.0f}%)")
    lines += [
        "errors by code: "
        + (", ".join(f"{c} {n}" for c, n in report.errors.most_common()) or "none"),
        f"rule violations: {len(report.violations)} {by_rule or ''}"
        f"(checked in {out.check_seconds:.1f} s)   cut by the server: {report.cut}"
        + (f"   severed by kills: {report.severed} ({out.moving} moving)" if out.chaos else ""),
    ]
    lines += [f"  {v}" for v in report.violations[:20]]
    for t in [t for t in result.transcripts if is_cut(t)][:5]:  # what to look into
        lines.append(f"  cut: connection {t.uid}, last events {t.events[-6:]}")
    for host in out.hosts:
        if host.chaos is not None:
            chaos = host.chaos.summary()
            if host.name:
                chaos[0] = chaos[0].replace("chaos:", f"chaos on {host.name}:", 1)
            lines += chaos
    lines.append("")
    head = f"{'process':<26}{'peak RSS':>11}{'CPU avg':>9}{'CPU max':>9}{'threads':>9}"
    lines.append(f"{head}{'fds start':>11}{'fds end':>9}")
    busy: list[tuple[str, float]] = []
    for host in out.hosts:
        rss = cpu = 0.0
        for name, samples in sorted(by_title(host.samples).items()):
            during = samples[1:] or samples  # the first sample only primes cpu_percent
            avg = sum(s.cpu for s in during) / len(during)
            cpu += avg
            rss += max(s.rss for s in samples)
            title = f"{host.name} {name}" if host.name else name
            lines.append(
                f"{title[:25]:<26}{mib(max(s.rss for s in samples)):>11}{avg:>8.0f}%"
                f"{max(s.cpu for s in during):>8.0f}%{max(s.threads for s in samples):>9}"
                f"{host.start.get(name, 0):>11}{host.end.get(name, 0):>9}"
            )
        if cluster:
            lines.append(f"{host.name + ' (all processes)':<26}{mib(rss):>11}{cpu:>8.0f}%")
        busy.append((host.name, cpu))
    if out.redis is not None:
        busy.append(("redis", redis_rows(out.redis, out.load_seconds, lines)))
    cores = os.cpu_count() or 1
    lines.append(f"{'load generator (this one)':<26}{'':>11}{out.load_cpu:>8.0f}%")
    if cluster:
        parts = " + ".join(f"{name} {cpu:.0f}%" for name, cpu in busy)
    else:
        parts = f"server {busy[0][1]:.0f}%"
    lines.append(
        f"CPU: {parts} + load generator {out.load_cpu:.0f}% of {100 * cores}% ({cores} cores)"
    )
    stops = []
    for host in out.hosts:
        status = "killed" if host.exit_status is None else str(host.exit_status)
        stop = f"SIGTERM -> exit {status} in {host.stop_seconds:.1f} s"
        stops.append(f"{host.name} {stop}" if host.name else stop)
    survivors = [s for h in out.hosts for s in h.survivors]
    lines.append(f"shutdown: {'; '.join(stops)}; survivors: {', '.join(survivors) or 'none'}")
    if out.redis is not None:
        status = "killed" if out.redis.exit_status is None else str(out.redis.exit_status)
        left = out.redis.left
        keys = ", ".join(left[:8]) + (", ..." if len(left) > 8 else "")
        lines.append(
            f"redis-server: SIGTERM -> exit {status}; keys left after the hosts stopped:"
            f" {len(left)}{' (' + keys + ')' if left else ''}"
        )
    lines.append("RESULT: " + ("FAIL: " + "; ".join(out.failures) if out.failures else "PASS"))
    return "\n".join(lines)


def redis_rows(r: RedisOutcome, seconds: float, lines: list[str]) -> float:
    """Redis's row in the process table, and a line of what it says itself; its CPU avg."""
    if not r.samples:
        lines.append(f"{'redis-server':<26}{'(no samples)':>11}")
        return 0.0
    during = r.samples[1:] or r.samples
    avg = sum(s.cpu for s in during) / len(during)
    lines.append(
        f"{'redis-server':<26}{mib(max(s.rss for s in r.samples)):>11}{avg:>8.0f}%"
        f"{max(s.cpu for s in during):>8.0f}%{max(s.threads for s in r.samples):>9}"
        f"{r.start_fds:>11}{r.end_fds:>9}"
    )
    a, b = r.before, r.after
    if a is not None and b is not None:
        user, system = b.user - a.user, b.system - a.system
        share = 100 * (user + system) / seconds if seconds else 0.0
        lines.append(
            f"  redis memory: INFO used_memory {mib(a.used_memory)} -> {mib(b.used_memory)}"
            f" (peak {mib(b.used_memory_peak)}), RSS {mib(a.rss)} -> {mib(b.rss)}; {b.keys} keys"
        )
        lines.append(
            f"  redis CPU: cpu_times {user:.2f} s user + {system:.2f} s sys"
            f" over the {seconds:.1f} s of load ({share:.0f}% of one core)"
        )
    return avg


def halt_on_signals(chaoses: list[Chaos]) -> None:
    """On Ctrl-C or SIGTERM, halt the chaos at once, before the load winds down.

    The users' last reads and closes need a server whose children all run again.
    (With this handler in place, ``asyncio.run`` keeps it instead of its own.)
    """

    def interrupted(signum: int, frame: object) -> None:
        for chaos in chaoses:
            chaos.halt()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds like Ctrl-C: the server is stopped on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with ExitStack() as stack:
        logs: list[IO[bytes]] = [
            stack.enter_context(tempfile.TemporaryFile()) for _ in range(args.hosts)
        ]
        try:
            out = soak(args, logs)
        except RuntimeError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            for name, log in named(logs):
                log.seek(0)
                print(f"{name}{log.read().decode(errors='replace')[-4000:]}", file=sys.stderr)
            return 2
        print(summary(out))
        if args.transcripts and out.load is not None:
            write_transcripts(args.transcripts, out.load, hosts=args.hosts > 1)
        if args.logs:
            write_logs(args.logs, named(logs))
        if out.failures:
            for name, log in named(logs):
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                print(f"\nserver log {name}(tail):\n{tail}", file=sys.stderr)
    return 1 if out.failures else 0


def write_logs(path: str, logs: list[tuple[str, IO[bytes]]]) -> None:
    os.makedirs(path, exist_ok=True)
    for name, log in logs:
        log.seek(0)
        with open(os.path.join(path, f"{name.strip() or 'server'}.log"), "wb") as f:
            f.write(log.read())


def named(logs: list[IO[bytes]]) -> list[tuple[str, IO[bytes]]]:
    """Each server's log with its host's name (none for the one server)."""
    if len(logs) == 1:
        return [("", logs[0])]
    return [(f"h{n} ", log) for n, log in enumerate(logs, 1)]


if __name__ == "__main__":
    sys.exit(main())
