"""Why the server closed a connection on its own: one reason each, one log line each.

Every connection the server closes without being asked (``#CLOSE#`` and EOF
are the client's own doing) goes through ``dropped``: one line at INFO with
the reason, the client's id (``none`` before it has one), its address and the
process that closed it, and one more in this process's ``drops`` counter for
the metrics. The reasons are the words the log, the metrics
(``matchmaker_drops_total{reason=...}``) and the README use.
"""

from __future__ import annotations

import enum
import logging
import socket

from ipc.counts import COUNTS
from matchmaker import logs

log = logging.getLogger("matchmaker.drops")


class Reason(enum.StrEnum):
    """Why a connection was closed by the server."""

    #: more than ``--sendq`` bytes waited to be sent to it (``ERROR SLOW_CONSUMER``)
    SENDQ = "sendq"
    #: it read none of its backed-up output for ``--stall-timeout`` s (``ERROR SLOW_CONSUMER``)
    STALLED = "stalled"
    #: it sent nothing for ``--idle-timeout`` seconds (``ERROR IDLE``)
    IDLE = "idle"
    #: its address holds as many connections as it may (``ERROR TOO_MANY``)
    TOO_MANY = "too_many"
    #: its address opened connections faster than it may (``ERROR TOO_MANY``)
    ACCEPT_RATE = "accept_rate"
    #: ``--max-clients`` reached, or no worker could take it (``ERROR FULL``)
    FULL = "full"
    #: its TLS handshake was not done within ``--tls-handshake-timeout``, or its
    #: WebSocket upgrade request within ``--ws-handshake-timeout``
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: its TLS handshake failed (not TLS at all, no common version, a bad record), or its
    #: request to the WebSocket port was no HTTP (HTTP 400)
    HANDSHAKE_FAILED = "handshake_failed"
    #: its WebSocket upgrade came from a page of an origin not allowed (``--ws-origin``;
    #: HTTP 403)
    ORIGIN = "origin"
    #: a WebSocket client that sent nothing, not even a pong, between two pings
    #: (``--ws-ping-interval``)
    NO_PONG = "no_pong"
    #: the server is shutting down (``OUTAGE``)
    STOPPING = "stopping"
    #: it was moving between workers when one died, and its id went to another (``OUTAGE``)
    OUTAGE = "outage"
    #: with ``--redis``: no id could be given, the shared table is out of reach
    #: (``ERROR UNAVAILABLE``)
    UNAVAILABLE = "unavailable"
    #: a bug while handling it, or a socket the worker could not serve (logged above)
    ERROR = "error"


def dropped(reason: Reason, cid: int, peer: str, detail: str = "") -> None:
    """Log the one line of a connection the server closes, and count it."""
    COUNTS.drops[reason.value] += 1
    client = str(cid) if cid else "none"
    why = f" ({detail})" if detail else ""
    log.info(
        'drop reason=%s client=%s peer=%s process="%s"%s',
        reason.value,
        client,
        peer,
        logs.title,
        why,
        extra={
            "event": "drop",
            "reason": reason.value,
            "client": cid or None,
            "peer": peer,
            "detail": detail or None,
        },  # fmt: skip
    )


def address(addr: object) -> str:
    """A peer address as people write it: ``1.2.3.4:5``, ``[::1]:5``; ``?`` if unknown."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def peer_of(sock: socket.socket) -> str:
    """``address`` of a socket's peer; ``?`` for one already gone."""
    try:
        return address(sock.getpeername())
    except OSError:
        return "?"
