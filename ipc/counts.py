"""What one process counts for the metrics, and the report that carries it to the supervisor.

Each process of the server is one role, so each holds one ``Counts``
(``COUNTS``, like logging's loggers: one per process). Counting is an int
added in memory, never a lock or a system call, so it can sit on the path of
every line. The totals since the process started go to the supervisor as one
small datagram over the process's control socket (``report``), at most every
``REPORT_INTERVAL`` seconds and only when something changed. Totals, not
deltas: a report lost (a full socket) or a second one changes nothing, and
when the process dies the supervisor keeps its last totals
(``matchmaker.metrics``).

No I/O here but ``report``, which never waits.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

#: How often a process may report: the workers report on their heartbeat.
REPORT_INTERVAL = 0.25

#: The paths a chat line takes, by index into ``Counts.lines``: both ends on one
#: worker from the start; on one worker because one end moved there for the
#: session; relayed through the matchmaker to another worker; to another host.
SAME_WORKER, MOVED, RELAYED, CROSS_HOST = range(4)
PATHS = ("same_worker", "moved", "relayed", "cross_host")


class Counts:
    """The counters of one process. Keys of ``flat()``: ``metric`` or ``metric:label``."""

    __slots__ = ("lines", "errors", "drops", "moves", "sessions", "gauges", "_reported", "_at")

    def __init__(self) -> None:
        self.lines = [0] * len(PATHS)  #: chat lines sent on, by path (by the sender's worker)
        self.errors: Counter[str] = Counter()  #: ``ERROR`` lines sent, by code
        self.drops: Counter[str] = Counter()  #: connections closed by the server, by reason
        self.moves = 0  #: clients this worker handed to another for a session
        self.sessions = 0  #: sessions started (counted at the end that asked for it)
        #: levels, not totals (the matchmaker's sessions active)
        self.gauges: dict[str, int] = {}
        self._reported: dict[str, int] | None = None
        self._at = -REPORT_INTERVAL  # when the last report went

    def flat(self) -> dict[str, int]:
        """Every counter that is not 0, and every gauge, by key."""
        flat = {f"lines:{PATHS[i]}": n for i, n in enumerate(self.lines) if n}
        flat.update((f"errors:{code}", n) for code, n in self.errors.items())
        flat.update((f"drops:{reason}", n) for reason, n in self.drops.items())
        if self.moves:
            flat["moves"] = self.moves
        if self.sessions:
            flat["sessions"] = self.sessions
        return flat

    def due(self) -> bool:
        """Whether a report may go now (gauges that cost a count are taken only then)."""
        return time.monotonic() - self._at >= REPORT_INTERVAL

    def report(self, sock: socket.socket | None, force: bool = False) -> bool:
        """Send the totals and gauges over ``sock`` if they changed (or ``force``), at most
        every ``REPORT_INTERVAL`` s, never waiting; whether a report went. A full socket
        drops it: the next one carries all."""
        now = time.monotonic()
        if not (force or self.due()):
            return False
        flat = self.flat()
        state = {**flat, **{f"gauge:{k}": v for k, v in self.gauges.items()}}
        if sock is None or (state == self._reported and not force):
            return False
        payload = json.dumps({"counters": flat, "gauges": self.gauges}).encode()
        try:
            sock.send(payload, socket.MSG_DONTWAIT)
        except OSError:
            return False
        self._reported, self._at = state, now
        return True


#: This process's counts.
COUNTS = Counts()


def parse(payload: bytes) -> tuple[dict[str, int], dict[str, int]] | None:
    """(counters, gauges) of a report; None for what is no report."""
    try:
        got = json.loads(payload)
        counters, gauges = got["counters"], got["gauges"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(counters, dict) or not isinstance(gauges, dict):
        return None
    return {str(k): int(v) for k, v in counters.items()}, {
        str(k): int(v) for k, v in gauges.items()
    }


class Totals:
    """The server's counts, from every process's reports: what the supervisor serves.

    A process's counters are totals since it started; when it ends
    (``ended``) they are kept, so that the server's counters never go down
    while it runs, however often a process is replaced. Its gauges go with
    it. ``view`` is replaced whole at each change, never changed in place:
    another thread may read it at any time.
    """

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, int]] = {}  # by process: its counters this run
        self.levels: dict[str, dict[str, int]] = {}  # by process: its gauges
        self.retired: Counter[str] = Counter()  # counters of the runs that ended
        #: processes that have reported since they (re)started: they serve
        self.heard: set[str] = set()
        #: (every counter summed, every gauge summed)
        self.view: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def take(self, process: str, payload: bytes) -> None:
        got = parse(payload)
        if got is None:
            return
        self.latest[process], self.levels[process] = got
        self.heard.add(process)
        self._update()

    def ended(self, process: str) -> None:
        """``process`` died (or stopped): its counters stay, its gauges go."""
        self.retired.update(self.latest.pop(process, {}))
        self.levels.pop(process, None)
        self.heard.discard(process)
        self._update()

    def _update(self) -> None:
        counters = Counter(self.retired)
        gauges: Counter[str] = Counter()
        for flat in self.latest.values():
            counters.update(flat)
        for levels in self.levels.values():
            gauges.update(levels)
        self.view = (dict(counters), dict(gauges))
