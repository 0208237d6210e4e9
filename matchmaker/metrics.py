"""``--metrics-port``: the server's counters in Prometheus's text format, served over HTTP.

The supervisor serves them, for three reasons. It outlives every other
process, so the counters survive any child's restart (each child reports its
totals since it started, and the supervisor keeps a dead child's last ones:
``ipc.counts.Totals``), and a counter goes down only when the server
restarts, as Prometheus expects. It knows what no other process does: the
restarts, and every child's pid for the memory and CPU figures. And it
carries no client traffic: a scrape never delays a line, while the
matchmaker, which sees the sessions, is on the path of every line between
workers. The children send their counts over the control sockets the
supervisor already holds (``ipc.counts``); the acceptor's shared memory
gives the clients connected.

The HTTP server (``wsgiref``'s, with ``prometheus_client``'s application) runs
on a thread of its own: the supervisor's loop blocks in ``wait`` and must not
be held up by a slow scraper. The thread only reads what the loop publishes
whole (``Totals.view``, the pids); rendering does not depend on the number of
clients, only on the number of processes and label values, so a scrape takes
milliseconds at any load. It is the only thread, and it answers one scrape at
a time (a scraper that sends nothing is cut after ``SCRAPE_TIMEOUT``): the
supervisor forks its children, which needs it alone, so it pauses the thread
around each fork (``MetricsServer.pause``; a scrape waits meanwhile in the
listening socket's backlog). This module (and ``prometheus_client``, with
``ssl``) is only loaded with ``--metrics-port``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from ipc.counts import PATHS, Totals
from ipc.load import WorkerLoad
from matchmaker.drops import Reason
from wire.errors import ErrorCode

log = logging.getLogger("matchmaker.metrics")

#: Seconds a scraper may take to send its request or read the answer; the thread is
#: its alone meanwhile.
SCRAPE_TIMEOUT = 5.0

#: The roles, as the restart counter and the process figures label them.
ROLES = ("acceptor", "matchmaker", "worker")


def role_of(title: str) -> str:
    """``worker 2`` -> ``worker``."""
    return title.split(" ", 1)[0]


class Collector:
    """Renders the server's figures at each scrape, from what the supervisor publishes.

    ``processes`` returns ``(title, pid)`` of the supervisor and every child
    now; ``restarts`` the restarts by role so far.
    """

    def __init__(
        self,
        totals: Totals,
        load: WorkerLoad,
        processes: Callable[[], Iterable[tuple[str, int]]],
        restarts: Callable[[], dict[str, int]],
    ) -> None:
        self.totals, self.load, self.processes, self.restarts = totals, load, processes, restarts
        self._procs: dict[int, psutil.Process] = {}

    def collect(self) -> Iterator[Metric]:
        counters, gauges = self.totals.view

        def count(key: str) -> int:
            return counters.get(key, 0)

        yield GaugeMetricFamily(
            "matchmaker_clients_connected", "Clients the workers serve now", sum(self.load.live)
        )
        yield GaugeMetricFamily(
            "matchmaker_sessions_active",
            "Sessions under way with an end on this host",
            gauges.get("sessions_active", 0),
        )
        yield CounterMetricFamily(
            "matchmaker_sessions_started",
            "Sessions started (counted at the end that asked for it)",
            count("sessions"),
        )
        lines = CounterMetricFamily(
            "matchmaker_lines_relayed",
            "Chat lines passed to a partner, by path: same_worker, moved (one end moved "
            "to its partner's worker for the session), relayed (through the matchmaker), "
            "cross_host (to another host, --redis)",
            labels=["path"],
        )
        for path in PATHS:
            lines.add_metric([path], count(f"lines:{path}"))
        yield lines
        errors = CounterMetricFamily(
            "matchmaker_errors", "ERROR lines sent to clients, by code", labels=["code"]
        )
        for code in ErrorCode:
            errors.add_metric([code.value], count(f"errors:{code.value}"))
        for key in sorted(counters):  # codes this version does not know (a newer child's)
            if key.startswith("errors:") and key[7:] not in ErrorCode.__members__:
                errors.add_metric([key[7:]], counters[key])
        yield errors
        drops = CounterMetricFamily(
            "matchmaker_drops",
            "Connections the server closed on its own, by reason (README, 'Drops')",
            labels=["reason"],
        )
        for reason in Reason:
            drops.add_metric([reason.value], count(f"drops:{reason.value}"))
        yield drops
        yield CounterMetricFamily(
            "matchmaker_moves", "Clients moved to their partner's worker", count("moves")
        )
        restarts = CounterMetricFamily(
            "matchmaker_restarts", "Processes restarted after they died, by role", labels=["role"]
        )
        done = self.restarts()
        for role in ROLES:
            restarts.add_metric([role], done.get(role, 0))
        yield restarts
        yield from self._processes()

    def _processes(self) -> Iterator[Metric]:
        memory = GaugeMetricFamily(
            "matchmaker_process_resident_memory_bytes",
            "Resident memory of each process of the server",
            labels=["role", "process"],
        )
        cpu = CounterMetricFamily(
            "matchmaker_process_cpu_seconds",
            "CPU time (user and system) of each process of the server since it started",
            labels=["role", "process"],
        )
        seen: dict[int, psutil.Process] = {}
        for title, pid in self.processes():
            try:
                proc = self._procs.get(pid) or psutil.Process(pid)
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                continue  # gone since; its replacement shows at the next scrape
            seen[pid] = proc
            labels = [role_of(title), title]
            memory.add_metric(labels, rss)
            cpu.add_metric(labels, times.user + times.system)
        self._procs = seen
        yield memory
        yield cpu


class QuietHandler(WSGIRequestHandler):
    """One scrape, logged nowhere, with a deadline on each read and write of its socket."""

    timeout = SCRAPE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Scrapes are not logged."""


class MetricsServer:
    """The HTTP server and its thread, which ``pause`` stops and ``resume`` starts again."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]

        class Server(WSGIServer):
            address_family = family

        self.httpd = make_server(
            str(sockaddr[0]), port, make_wsgi_app(registry), Server, handler_class=QuietHandler
        )
        self.thread: threading.Thread | None = None
        self.resume()

    @property
    def server_port(self) -> int:
        return self.httpd.server_port

    def resume(self) -> None:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def pause(self) -> None:
        """Until ``resume``: no thread runs (a scrape under way finishes first)."""
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None

    def close(self) -> None:
        self.pause()
        self.httpd.server_close()


def serve(host: str, port: int, collector: Collector) -> MetricsServer:
    """Serve ``collector`` at ``http://host:port/metrics`` from a thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return MetricsServer(host, port, registry)
