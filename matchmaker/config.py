"""Command-line flags of ``python -m matchmaker`` and the frozen ``Config`` they make.

Every limit is a flag; each default is justified where it is defined (the
line limit in ``wire.codec``, the client limit in ``matchmaker.table``).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import resource
from dataclasses import dataclass, fields
from typing import Any

from ipc.load import BEAT_INTERVAL
from matchmaker.table import DEFAULT_MAX_CLIENTS
from wire.codec import DEFAULT_MAX_LINE

#: Default for ``--sendq``: 1 MiB may wait to be sent to one client before it is
#: cut as a slow consumer. InspIRCd's default sendq is 1 MB; ergo's is 96 KiB.
#: 1 MiB rides out a client that stalls for seconds while its partner types.
DEFAULT_SENDQ = 1 << 20

#: Default for ``--shutdown-timeout``: the protocol promises that every process
#: has exited within 5 s of SIGINT/SIGTERM.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

#: Default for ``--linger``: seconds a closing client may take to read what is left
#: for it (``BYE``, ``ERROR SLOW_CONSUMER``, ``OUTAGE``) before its socket is reset.
#: Long enough for any client that reads at all; short enough that a client that
#: never reads cannot pin its buffers.
DEFAULT_LINGER = 2.0

#: Default for ``--stall-timeout``: a client whose output is backed up (more than
#: a quarter of ``--sendq`` waits for it, so its partner is held) and that reads none
#: of it for this long is cut as a slow consumer, so that the partner it holds
#: can go on. A client that reads at all, however slowly, is never cut for it.
DEFAULT_STALL_TIMEOUT = 30.0

#: Default for ``--legacy-pace``: the original client reads one 256-byte record
#: per read() and loses whatever was coalesced behind it; 20 ms between records
#: keeps them apart on any link it was ever used on.
DEFAULT_LEGACY_PACE = 0.02

#: Default for ``--worker-timeout``: a worker whose event loop has not run for
#: 5 s is killed and replaced. The loop beats every ``ipc.load.BEAT_INTERVAL``
#: (0.25 s) from a timer, so that is 20 beats missed: far more than a busy loop
#: ever runs late (a long callback, a burst of new clients, a GC pause, a loaded
#: machine), which matters because the kill cuts every client of that worker;
#: yet short enough that clients queued to a stuck worker are served by its
#: replacement within seconds. (gunicorn's default, 30 s, is for workers that
#: may spend that long on one request; ours never block.)
DEFAULT_WORKER_TIMEOUT = 5.0

#: Default for ``--tls-handshake-timeout``: a TLS handshake takes one or two round
#: trips, well under a second on any link a person chats over; 10 s leaves room for
#: a slow mobile link, and bounds what a client that never finishes it (or a plain
#: client on the TLS port) holds: one descriptor and a little memory, no id.
#: asyncio's own default is 60 s, nginx's client_header_timeout (which covers it) 60 s.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0
#: Default for ``--ws-handshake-timeout``: a browser sends its HTTP request in the
#: first round trip after connecting; the same 10 s as a TLS handshake bounds what a
#: connection that never sends a whole request holds (one descriptor, no id).
DEFAULT_WS_HANDSHAKE_TIMEOUT = 10.0
#: Default for ``--ws-ping-interval``: a ping every 20 s, and a client that has sent
#: nothing, not even the pong, by the next one is cut: a dead browser tab or a
#: vanished network is noticed within 40 s, and proxies that drop connections idle
#: for 30 to 60 s (nginx's proxy_read_timeout is 60 s) see traffic. The `websockets`
#: library pings every 20 s by default too.
DEFAULT_WS_PING_INTERVAL = 20.0
#: Defaults for ``--rate`` and ``--burst``: each client may send 20 lines a second
#: on average and 60 at once (its bytes: a quarter of ``--max-line`` per line,
#: ``wire.budget.Pace``). A person types a few lines a second at most; a paste of
#: a few dozen lines goes through at once; only a program sending without pause
#: is slowed, never cut. IRC servers pace harder: RFC 1459's flood control
#: (section 8.10; ergo's "fakelag" is the same idea) allows a burst of about 5
#: lines, then one every 2 seconds; a one-to-one chat relays to one reader, not
#: to a network, so we allow more.
DEFAULT_RATE = 20.0
DEFAULT_BURST = 60

#: Defaults for ``--max-per-ip`` and ``--accept-rate``: one address may hold 100
#: connections at once and open 20 a second (20 at once). A school, an office or
#: a carrier-grade NAT puts many people behind one address, so the cap is high;
#: one program that opens connections in a loop still meets it long before
#: ``--max-clients``. (ergo, an IRC server, allows 16 at once per address; IRC
#: clients are people, one connection each, and so are ours.)
DEFAULT_MAX_PER_IP = 100
DEFAULT_ACCEPT_RATE = 20.0

#: Default for ``--node-ttl``: a host that has not renewed its heartbeat in Redis
#: for this long is dead to the others (it beats every quarter of it), as in
#: Socket.IO's Redis adapter (a beat every 5 s); also how long a rebuilt Redis
#: hands out no id, and how long sessions with other hosts outlive an outage.
DEFAULT_NODE_TTL = 5.0

#: The shortest ``--worker-timeout`` taken: four beats.
MIN_WORKER_TIMEOUT = 4 * BEAT_INTERVAL

PLACEMENTS = ("least-loaded", "round-robin")
LOG_FORMATS = ("text", "json")
LOOPS = ("auto", "uvloop", "asyncio")


def uvloop_available() -> bool:
    """Whether uvloop and its compiled loop for this interpreter are installed.

    Looked up, not imported: importing uvloop loads asyncio and ssl, about 6 MB
    of RSS, and the supervisor, which runs no event loop, loads it only for two
    workers or more, to share it with them (``roles.preloaded``).
    """
    spec = importlib.util.find_spec("uvloop")
    if spec is None or not spec.submodule_search_locations:
        return False
    locations = list(spec.submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec("uvloop.loop", locations) is not None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a process of the server needs to know; picklable for spawn."""

    host: str = "0.0.0.0"
    #: the plain protocol v1 port; None with ``--port off``
    port: int | None = 5000
    workers: int = 1
    max_line: int = DEFAULT_MAX_LINE
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_per_ip: int = DEFAULT_MAX_PER_IP
    accept_rate: float = DEFAULT_ACCEPT_RATE
    sendq: int = DEFAULT_SENDQ
    placement: str = "least-loaded"
    migrate: bool = True
    #: serve an idle plain-TCP client without a transport until it needs one
    park: bool = True
    backlog: int = 1024
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    linger: float = DEFAULT_LINGER
    idle_timeout: float = 0.0
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    legacy_port: int | None = None
    legacy_pace: float = DEFAULT_LEGACY_PACE
    #: protocol v1 over TLS on its own port (``--tls-port``), with this certificate chain
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    #: WebSocket clients and the browser page (``--ws-port``); over TLS with ``--tls-cert``
    ws_port: int | None = None
    #: the Origins a browser page may connect from; empty: the page's own origin only
    ws_origin: tuple[str, ...] = ()
    ws_handshake_timeout: float = DEFAULT_WS_HANDSHAKE_TIMEOUT
    ws_ping_interval: float = DEFAULT_WS_PING_INTERVAL
    loop: str = "asyncio"
    log_level: str = "INFO"
    log_format: str = "text"
    #: Prometheus metrics over HTTP (``--metrics-port``), served by the supervisor
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    redis: str | None = None
    node: str | None = None
    node_ttl: float = DEFAULT_NODE_TTL
    #: this run of the host, for the shared table: set by the supervisor
    token: str = ""


DEFAULTS = Config()


#: Descriptors a process keeps beyond one per client: links, pipes, logs, the listener.
FD_MARGIN = 256


def host_max_clients(workers: int) -> int:
    """``--max-clients`` unless given: ``DEFAULT_MAX_CLIENTS``, or what ``workers`` workers
    hold under this host's open-file hard limit (the supervisor raises every process's
    soft limit to it), if that is fewer: each worker holds its clients' descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CLIENTS
    return max(1, min(DEFAULT_MAX_CLIENTS, workers * (hard - FD_MARGIN)))


class _Given(argparse.Action):
    """Stores the value, and that it was given: a default that adapts to the host must
    not override what the operator asked for."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _count_or_off(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive integer, not {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, not {text}")
    return value


def _port_or_off(text: str) -> int | None:
    return None if text == "off" else _port(text)


def _text_or_off(text: str) -> str | None:
    return None if text == "off" else text


#: ``--node``'s default, as ``--help`` shows it: the supervisor names the host so.
AUTO_NODE = "HOSTNAME:PORT"


def _seconds_or_off(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number of seconds, not {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive number, not {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _worker_timeout(text: str) -> float:
    value = float(text)
    if not value >= MIN_WORKER_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_WORKER_TIMEOUT:g} s (four heartbeats), not {text}"
        )
    return value


def _origin(text: str) -> str:
    """An origin as browsers send it: ``scheme://host[:port]``, no path; or ``*``."""
    if text == "*":
        return text
    scheme, sep, rest = text.partition("://")
    if scheme.lower() not in ("http", "https") or not sep or not rest or "/" in rest:
        raise argparse.ArgumentTypeError(
            f"an origin is http[s]://HOST[:PORT] with no path, or '*'; not {text}"
        )
    return text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m matchmaker",
        description=(
            "One-to-one chat server. Clients connect over TCP and speak protocol v1 "
            "(docs/PROTOCOL.md): GET lists clients, CONNECT <id> starts a session, "
            "#GOODBYE# ends it, #CLOSE# disconnects. An acceptor process hands each "
            "connection to one of N worker processes; a matchmaker process owns the "
            "id/FREE/BUSY table and relays lines between workers."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULTS.host, help="address to listen on")
    parser.add_argument(
        "--port",
        type=_port_or_off,
        default=DEFAULTS.port,
        help="TCP port; 0 picks a free one, 'off' serves none (then --tls-port, --ws-port or "
        "--legacy-port is needed). Prints 'listening on HOST:PORT' when ready",
    )
    parser.add_argument(
        "--tls-port",
        type=_port_or_off,
        default="off",
        help="also serve protocol v1 over TLS (1.2 or newer) on this port (0 picks a port, "
        "printed as 'tls listening on HOST:PORT'); needs --tls-cert and --tls-key",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="with --tls-port or --ws-port: the server's certificate chain (PEM, leaf first); "
        "with --ws-port it makes that port wss:// and https://",
    )
    parser.add_argument(
        "--tls-key",
        default=None,
        metavar="FILE",
        help="the private key of --tls-cert (PEM, not encrypted)",
    )
    parser.add_argument(
        "--tls-handshake-timeout",
        type=_seconds,
        default=DEFAULTS.tls_handshake_timeout,
        help="with --tls-port: close a connection whose TLS handshake is not done within "
        "this many seconds (it has no id yet)",
    )
    parser.add_argument(
        "--ws-port",
        type=_port_or_off,
        default="off",
        help="also serve WebSocket clients at /ws and the browser page at / on this port (0 "
        "picks a port, printed as 'ws listening on HOST:PORT'); wss:// and https:// with "
        "--tls-cert",
    )
    parser.add_argument(
        "--ws-origin",
        type=_origin,
        action="append",
        default=argparse.SUPPRESS,  # absent unless given; --help states the default itself
        metavar="ORIGIN",
        help="with --ws-port: an Origin a browser page may connect to /ws from, as "
        "http[s]://HOST[:PORT]; repeat for more, '*' for any; another gets HTTP 403 "
        "(default: the page's own)",
    )
    parser.add_argument(
        "--ws-handshake-timeout",
        type=_seconds,
        default=DEFAULTS.ws_handshake_timeout,
        help="with --ws-port: close a connection that has not sent a whole HTTP request "
        "within this many seconds (after its TLS handshake, with --tls-cert)",
    )
    parser.add_argument(
        "--ws-ping-interval",
        type=_seconds,
        default=DEFAULTS.ws_ping_interval,
        help="with --ws-port: ping each WebSocket client this often; one that has sent "
        "nothing, not even the pong, by the next ping is closed",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=os.cpu_count() or 1,
        help="worker processes for client connections; %(default)s here (default: the CPU "
        "count). Each holds its share of --max-clients, so the open-file limit of a process "
        "must exceed --max-clients / --workers + 256",
    )
    parser.add_argument(
        "--legacy-port",
        type=_port_or_off,
        default="off",
        help="also listen here for the original C++ client (256-byte records; 0 picks a port, "
        "printed as 'legacy listening on HOST:PORT')",
    )
    parser.add_argument(
        "--legacy-pace",
        type=_seconds,
        default=DEFAULTS.legacy_pace,
        help="seconds between two records written to a legacy client",
    )
    parser.add_argument(
        "--max-line",
        type=_positive,
        default=DEFAULTS.max_line,
        help="longest inbound line in bytes, terminator excluded (longer: ERROR TOO_LONG)",
    )
    parser.add_argument(
        "--max-clients",
        type=_positive,
        default=DEFAULTS.max_clients,
        action=_Given,
        help="clients connected at once (one more: ERROR FULL, then closed). Each worker "
        "holds its share, a descriptor each: unless given, no more than --workers x (the "
        "open-file hard limit - 256)",
    )
    parser.add_argument(
        "--max-per-ip",
        type=_count_or_off,
        default=DEFAULTS.max_per_ip,
        metavar="N",
        help="connections at once from one address, IPv6 by /64 (one more: ERROR TOO_MANY, "
        "then closed); 0 is off",
    )
    parser.add_argument(
        "--accept-rate",
        type=_rate,
        default=DEFAULTS.accept_rate,
        metavar="PER_S",
        help="new connections per second from one address, as many at once (more: ERROR "
        "TOO_MANY, then closed); 0 is off",
    )
    parser.add_argument(
        "--sendq",
        type=_positive,
        default=DEFAULTS.sendq,
        help="bytes that may wait to be sent to one client (one GET answer longer than that "
        "may wait on top, once); past a quarter of it the server stops reading whoever adds "
        "to it (more: ERROR SLOW_CONSUMER, closed)",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULTS.rate,
        metavar="LINES_PER_S",
        help="lines per second each client may send on average; past its budget its reading "
        "pauses until the budget has room (nothing is lost; bytes: a quarter of --max-line per "
        "line); 0 is off",
    )
    parser.add_argument(
        "--burst",
        type=_positive,
        default=DEFAULTS.burst,
        metavar="LINES",
        help="lines a client may send at once before --rate paces it",
    )
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default=DEFAULTS.placement,
        help="how the acceptor picks a worker for a new connection",
    )
    parser.add_argument(
        "--migrate",
        choices=("on", "off"),
        default="on",
        help="when a session forms across workers, move one client's socket to its "
        "partner's worker so the pair is relayed in one process",
    )
    parser.add_argument(
        "--park",
        choices=("on", "off"),
        default="on",
        help="hold a client of --port without an event-loop transport (about 1.3 kB of "
        "memory) until it sends, hangs up or is not taken a write at once",
    )
    parser.add_argument(
        "--backlog", type=_positive, default=DEFAULTS.backlog, help="listen() backlog"
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=DEFAULTS.shutdown_timeout,
        help="seconds from SIGTERM/SIGINT until stragglers are killed",
    )
    parser.add_argument(
        "--linger",
        type=_seconds,
        default=DEFAULTS.linger,
        help="seconds a closing client may take to read its last lines before it is reset",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds_or_off,
        default=DEFAULTS.idle_timeout,
        help="close clients that send nothing for this many seconds (ERROR IDLE); 0 is off",
    )
    parser.add_argument(
        "--stall-timeout",
        type=_seconds,
        default=DEFAULTS.stall_timeout,
        help="cut a client that reads none of its backed-up output (over a quarter of --sendq) "
        "for this many seconds (ERROR SLOW_CONSUMER)",
    )
    parser.add_argument(
        "--worker-timeout",
        type=_worker_timeout,
        default=DEFAULTS.worker_timeout,
        help="kill and replace a worker whose event loop has not run for this many seconds",
    )
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="the workers' event loop: uvloop (libuv, faster) or asyncio's own; auto picks "
        "uvloop when it is installed",
    )
    parser.add_argument(
        "--redis",
        type=_text_or_off,
        default="off",
        metavar="URL",
        help="share one client table with every host started with the same URL "
        "(redis://HOST:PORT/DB; docs/CLUSTER.md); without it this host is on its own",
    )
    parser.add_argument(
        "--node",
        default=AUTO_NODE,
        help="this host's name in the shared table; unique per host",
    )
    parser.add_argument(
        "--node-ttl",
        type=_seconds,
        default=DEFAULTS.node_ttl,
        help="with --redis: seconds after which a silent host's clients are gone; also how "
        "long sessions with other hosts outlive a Redis outage",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=DEFAULTS.log_level,
        help="logging threshold (logs go to stderr)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=DEFAULTS.log_format,
        help="text: one line per record for people; json: one JSON object per line, with "
        "the fields of each record (a drop's reason, client, peer) apart",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port_or_off,
        default="off",
        help="serve Prometheus metrics over HTTP on this port (GET /metrics; 0 picks a port, "
        "printed as 'metrics listening on HOST:PORT')",
    )
    parser.add_argument(
        "--metrics-host",
        default=DEFAULTS.metrics_host,
        help="with --metrics-port: the address the metrics are served on (loopback, so "
        "that only this machine can read them unless you say otherwise)",
    )
    return parser


def _pick_loop(choice: str, parser: argparse.ArgumentParser) -> str:
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        parser.error("--loop uvloop: uvloop is not installed (pip install uvloop)")
    return choice


def parse_args(argv: list[str] | None = None) -> Config:
    parser = build_parser()
    ns = vars(parser.parse_args(argv))  # one flag per Config field, same names
    if not ns.pop("max_clients_given", False):
        ns["max_clients"] = host_max_clients(ns["workers"])
    ns["loop"] = _pick_loop(ns["loop"], parser)
    ns["migrate"] = ns["migrate"] == "on"
    ns["park"] = ns["park"] == "on"
    ns["token"] = ""
    if ns["node"] == AUTO_NODE:
        ns["node"] = None  # the supervisor names the host once its port is bound
    if ns["node"] is not None and (not ns["node"] or "|" in ns["node"]):
        parser.error("--node: a non-empty name without '|'")
    _check_tls(ns, parser)
    ns["ws_origin"] = tuple(ns.get("ws_origin") or ())
    return Config(**{f.name: ns[f.name] for f in fields(Config)})


def _check_tls(ns: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    """The TLS flags go together, and some port must be served.

    The files are only checked for being readable here: each worker loads them
    (a bad certificate or key stops the server at start, with the reason logged).
    """
    ports = ("port", "tls_port", "ws_port", "legacy_port")
    if all(ns[port] is None for port in ports):
        parser.error(
            "--port off: give --tls-port, --ws-port or --legacy-port, or there is nothing to serve"
        )
    certified = ns["tls_cert"] is not None or ns["tls_key"] is not None
    if ns["tls_port"] is None and not (certified and ns["ws_port"] is not None):
        if certified:
            parser.error("--tls-cert and --tls-key need --tls-port or --ws-port")
        return
    for flag in ("tls_cert", "tls_key"):
        name = "--" + flag.replace("_", "-")
        path = ns[flag]
        if path is None:
            needs = "--tls-port" if ns["tls_port"] is not None else "--tls-cert"
            parser.error(f"{needs} needs {name}")
        if not os.access(path, os.R_OK) or not os.path.isfile(path):
            parser.error(f"{name}: cannot read {path}")
