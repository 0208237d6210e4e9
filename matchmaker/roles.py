"""The one entry point every child process starts in, and the record it gets.

Each child is a fork of the supervisor (``matchmaker.forking``), which then
enters its role's module by name: only the child imports it. The roles'
modules pull in asyncio, uvloop and ssl (the workers) or the table (the
matchmaker); the supervisor runs none of that, and what it imports every child
holds too (in the pages they share, and in its own RSS). So the supervisor
loads only what more than one process uses (``preloaded``), once, for all of
them: the modules more than one role uses (``SHARED``), and, when there are
two workers or more, the workers' own. A module imported in each worker is a
private copy in each (about 6 MB of PSS a worker); imported before the fork it
is one copy they share, at the price of its pages in the RSS of every process.
Keep this module free of imports beyond ``dataclasses``: the types below are
for the type checker only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    from ipc.channel import Ends
    from ipc.load import WorkerLoad
    from matchmaker.config import Config

#: Exit status of a child that failed before it could serve (an import error, a
#: setting it cannot run with): the supervisor stops the server rather than
#: restart the child into the same failure (cf. gunicorn's WORKER_BOOT_ERROR).
BOOT_ERROR = 3

#: Modules more than one role imports (beyond what the supervisor itself needs): the
#: supervisor loads them before it forks, so that the children share one copy.
SHARED = ("ipc.messages", "matchmaker.drops", "wire.budget", "wire.dialects")

#: Each role's module, whose ``main`` is the process's entry point.
ACCEPTOR = "matchmaker.acceptor"
MATCHMAKER = "matchmaker.service"
#: the matchmaker of a host that shares its table through Redis (``--redis``)
CLUSTER = "matchmaker.cluster"
WORKER = "workers.process"


def preloaded(workers: int, loop: str) -> tuple[str, ...]:
    """What the supervisor imports before its first fork: ``SHARED``, and with two
    workers or more the workers' module and their event loop (``loop``: ``uvloop``
    or ``asyncio``, as ``--loop`` resolved it)."""
    if workers < 2:
        return SHARED
    return (*SHARED, WORKER, *(("uvloop",) if loop == "uvloop" else ()))


@dataclass
class Spawn:
    """What the supervisor starts a child with, by name: its role and all it is handed.

    One record for every role; each role reads the fields it needs. The
    supervisor keeps it and starts the child from it again after a death.
    """

    #: the process's name for ``ps`` and the logs: ``acceptor``, ``matchmaker``, ``worker 2``
    title: str
    #: its role's module (``ACCEPTOR``, ``MATCHMAKER``, ``WORKER``)
    module: str
    config: Config
    #: every worker's clients and heartbeat (read by the acceptor, written by the workers)
    load: WorkerLoad
    #: a worker's index, from 0
    slot: int = -1
    #: the acceptor: the listening sockets (none with ``--port off``; the legacy one only
    #: with ``--legacy-port``, the TLS one only with ``--tls-port``, the WebSocket one only
    #: with ``--ws-port``)
    listener: socket.socket | None = None
    legacy_listener: socket.socket | None = None
    tls_listener: socket.socket | None = None
    ws_listener: socket.socket | None = None
    #: the acceptor: every worker's end of its hand-off channel; a worker: its own end
    handoffs: list[socket.socket] = field(default_factory=list)
    #: the matchmaker: its ends of every worker's link, by index; a worker: its own ends
    links: list[Ends] = field(default_factory=list)
    #: the matchmaker and the workers: where the ends of fresh links arrive from the supervisor
    control: socket.socket | None = None
    #: a worker: its inbox for clients other workers move to it
    move_inbox: socket.socket | None = None
    #: a worker: every worker's sending end of those inboxes, by index
    move_outboxes: list[socket.socket] = field(default_factory=list)

    def fds(self) -> list[int]:
        """Every descriptor this record hands its child: the ones it keeps when forked."""
        return [fd for f in fields(self) for fd in _fds(getattr(self, f.name)) if fd >= 0]


def _fds(value: object) -> Iterator[int]:
    """The descriptors in a field: a socket or pipe end, or a list or pair of them."""
    if isinstance(value, list | tuple):
        for item in value:
            yield from _fds(item)
    elif callable(fileno := getattr(value, "fileno", None)):
        try:
            yield fileno()
        except OSError:  # closed
            pass


def enter(module: str, *args: object) -> None:
    """Runs in the child: import ``module`` and call its ``main(*args)`` (a ``Spawn``).

    A module that cannot be imported is a boot failure (``BOOT_ERROR``); what
    its ``main`` does before it serves is too (``matchmaker.proc.booting``).
    """
    try:
        main = __import__(module, fromlist=["main"]).main
    except Exception:
        import traceback

        traceback.print_exc()
        raise SystemExit(BOOT_ERROR) from None
    main(*args)
