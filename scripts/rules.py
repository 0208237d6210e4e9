"""The protocol's rules, checked against what every client sent and received.

Pure: no I/O and no clocks, so unit tests can feed it hand-made transcripts.

A client sees only its own lines, in order, so each transcript is replayed
against a model of what the server may do for one client (docs/PROTOCOL.md):
an automaton that tries every order in which the server could have handled the
client's lines among the lines it wrote back. Replies must come in the order of
the lines that caused them; a line is a command or a message depending on
whether the *server* had the client in a session when it read the line, so a
"command" may be relayed and a "message" refused, but only where some order of
events explains both ends. The transcripts are then tied together:

1. Per connection: every line received fits the lines sent: the right reply to
   each request, at most one session at a time, ENDED only for the partner, MSG
   only inside a session, CLIENTS showing the asker's own status.
2. Sessions pair up: the holders of ids a and b saw as many CONNECTED naming
   each other; ids are reused, so holders of one id are ordered by ``born``
   and the n-th such session on one side is the n-th on the other. Exactly one
   end asked, and at least one end ended it.
3. Per session: what one end got as MSG is a prefix of the lines the other end
   had the server relay in that session, in order; all of them if that end
   ended the session while the receiver stayed.

A connection the soak's chaos cut by killing the process that held it is
``severed``: its transcript may stop anywhere, as if the server had stopped
there, owing answers, ``ENDED`` or ``BYE``, with a line cut short at the end;
what its partner got of its lines may then fall short, from the end. Every
other rule holds for it and its partners: no line lost in the middle, doubled,
reordered or from someone else.

Chat lines from the load generator read ``m <uid> <k> <seq> [padding]`` (the
sender's connection, its count of CONNECTED lines when it sent, the line's
index among its sent lines); they make every line unique and name the culprit.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

GOODBYE = "#GOODBYE#"
CLOSE = "#CLOSE#"
#: Lines after which the server closes the connection without ``BYE``.
CUTS = frozenset({"ERROR SLOW_CONSUMER", "ERROR IDLE", "OUTAGE"})

EventKind = Literal["sent", "recv", "shut"]
#: ``("sent", line)``, ``("recv", line)``, or ``("shut", "")``: the client closed
#: its sending side, which the server handles like ``#CLOSE#``.
Event = tuple[EventKind, str]


@dataclass(frozen=True, slots=True)
class Transcript:
    """One connection as its client saw it."""

    #: the load generator's number for the connection, carried by its chat lines
    uid: int
    #: the id from ``WELCOME`` (0 if none came)
    cid: int
    #: rank of its ``WELCOME`` among all connections: orders the holders of a reused id
    born: int
    events: tuple[Event, ...]
    #: the server closed the connection; False if the client gave up waiting
    closed: bool
    #: what came after the last line break before the connection closed (a line cut short)
    tail: str = ""
    #: a server process that held the connection was killed while it was open (the soak's
    #: chaos knows which): the connection may stop anywhere, without the lines it was owed
    severed: bool = False


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    uid: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] connection {self.uid}: {self.detail}"


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    connections: int = 0
    sessions: int = 0
    #: MSG lines received
    messages: int = 0
    lines_sent: int = 0
    #: ``ERROR`` lines received, by code
    errors: Counter[str] = field(default_factory=Counter)
    #: connections the server closed without ``BYE`` (``CUTS``), severed ones aside
    cut: int = 0
    #: connections cut by the death of the process that held them
    severed: int = 0
    #: the two connections (uids) of every session that paired up
    pairs: list[tuple[int, int]] = field(default_factory=list)


def message(uid: int, k: int, seq: int, pad: str = "") -> str:
    """A chat line the checker can attribute (see the module docstring)."""
    return f"m {uid} {k} {seq} {pad}" if pad else f"m {uid} {k} {seq}"


def parse_message(text: str) -> tuple[int, int, int] | None:
    """``(uid, k, seq)`` of a line made by ``message``, else None."""
    words = text.split(" ", 4)
    if len(words) < 4 or words[0] != "m":
        return None
    try:
        return int(words[1]), int(words[2]), int(words[3])
    except ValueError:
        return None


def free_action(line: str) -> tuple[str, str]:
    """What the server does with a line from a FREE client, per docs/PROTOCOL.md.

    ``(action, argument)``: ``silent``, ``get`` (arg ``FREE`` or empty),
    ``connect`` (the id), ``close``, ``help``, ``usage``, or ``reply`` with the
    one line written back at once.
    """
    words = line.split()
    if not words:
        return "silent", ""
    verb, args = words[0].upper(), words[1:]
    if verb == "GET":
        if not args:
            return "get", ""
        return ("get", "FREE") if [a.upper() for a in args] == ["FREE"] else ("usage", "")
    if verb == "CONNECT":
        ok = len(args) == 1 and args[0].isascii() and args[0].isdigit() and int(args[0]) > 0
        return ("connect", str(int(args[0]))) if ok else ("usage", "")
    if verb in ("PING", "HELP", CLOSE):
        if args:
            return "usage", ""
        return {"PING": ("reply", "PONG"), "HELP": ("help", ""), CLOSE: ("close", "")}[verb]
    if verb == GOODBYE:
        return "reply", "ERROR NOT_IN_CHAT"
    return "reply", f"ERROR UNKNOWN_COMMAND {words[0][:64]}"  # the server echoes 64 at most


def clients_ok(line: str, me: int, busy: bool, free_only: bool) -> bool:
    """A ``CLIENTS`` line that shows the asker as the server had it (``well_formed`` aside)."""
    if not line.startswith("CLIENTS"):
        return False
    at = line.find(f" {me}=")
    status = line[at + len(f" {me}=") :][:4] if at >= 0 else ""
    if free_only:
        return "=BUSY" not in line and status == ("" if busy else "FREE")
    return status == ("BUSY" if busy else "FREE")


def well_formed(line: str) -> bool:
    """A ``CLIENTS`` line: ``id=FREE`` or ``id=BUSY`` words in ascending id order."""
    if not _CLIENTS.fullmatch(line):
        return False
    ids = [int(cid) for cid in _ID.findall(line)]
    return all(a < b for a, b in zip(ids, ids[1:], strict=False))


_CLIENTS = re.compile(r"CLIENTS(?: [1-9][0-9]*=(?:FREE|BUSY))*")
_ID = re.compile(r" ([0-9]+)=")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


# ---- one connection ----------------------------------------------------------------

#: ``(what, a, b, flag)``: ("get", free_only, 0, _), ("connect", target, 0, _),
#: ("goodbye", peer, session, overtaken), ("close", 0, 0, _)
Pending = tuple[str, int, int, bool] | None
#: ``(what, session, kind)`` on a transition: how a session started or ended
Label = tuple[str, int, str]


class State(NamedTuple):
    """Where the server may be with one client: how far it got and what it holds."""

    i: int  # next line of the client's to handle
    j: int  # next received line to explain
    busy: bool  # in a session, at the worker
    peer: int
    k: int  # CONNECTED lines so far
    pend: Pending  # the request waiting for the matchmaker; no line is read meanwhile
    r: int  # lines relayed in the current session
    leaving: bool  # #CLOSE# or EOF handled: nothing more is read
    done: bool  # BYE or a cut: nothing more is written


@dataclass(frozen=True, slots=True)
class Bound:
    """What the other end of one session allows this end to have done in it."""

    #: MSG texts the partner received in the session; None: not known
    got: tuple[str, ...] | None = None
    #: the partner stayed until this end ended the session: nothing may be missing
    complete: bool = False
    #: how the session may have started or ended here; None: any way
    starts: frozenset[str] | None = None
    ends: frozenset[str] | None = None
    #: whether this end may be paired again before its goodbye is answered
    overtaken: bool = True


Step = tuple[Label | None, State]
#: What may follow while in a session: the partner's end, or answers to a control line.
_AFTER_BUSY = ("ENDED ", "CONNECTED ", "BYE")


class Replay:
    """The automaton for one transcript; ``bounds`` (by session) tie it to the partners."""

    def __init__(self, t: Transcript, bounds: dict[int, Bound] | None = None) -> None:
        self.cid = t.cid
        self.closed = t.closed
        self.severed = t.severed
        self.lines: list[str | None] = []  # None: the client shut its sending side
        self.before: list[int] = []  # lines received before each line was sent
        self.recv: list[str] = []
        for kind, text in t.events:
            if kind == "recv":
                self.recv.append(text)
            else:
                self.lines.append(None if kind == "shut" else text)
                self.before.append(len(self.recv))
        self.bounds = bounds or {}
        #: the first received line at or after each index that is no MSG
        self.after_msgs = list(range(len(self.recv) + 1))
        for j in range(len(self.recv) - 1, -1, -1):
            if self.recv[j].startswith("MSG "):
                self.after_msgs[j] = self.after_msgs[j + 1]

    def start(self) -> State:
        return State(0, 1, False, 0, 0, None, 0, False, False)

    def accepting(self, s: State) -> bool:
        if s.j != len(self.recv):
            return False
        if self.closed and not self.severed:
            return s.done
        # The client gave up waiting, or the process that held it died: where the server got
        # to is where it stopped, and the session may still have been open. The partner
        # cannot have got more than was relayed; it may have got less only then.
        b = self.bounds.get(s.k)
        return not s.busy or b is None or b.got is None or s.r >= len(b.got)

    def successors(self, s: State) -> list[Step]:
        if s.done:
            return []
        nxt = self.recv[s.j] if s.j < len(self.recv) else None
        if s.busy and nxt is not None:
            if nxt.startswith("MSG "):
                # Reading a MSG changes nothing, so taking it (and the MSG lines after it)
                # before any line of ours loses no explanation, and spares trying every
                # interleaving.
                j = self.after_msgs[s.j]
                return [(None, State(s.i, j, True, s.peer, s.k, s.pend, s.r, s.leaving, False))]
            if s.pend is None and not nxt.startswith(_AFTER_BUSY) and nxt not in CUTS:
                return []  # relays write nothing, and a control line is answered by one of these
        out: list[Step] = []
        if s.pend is None and not s.leaving and s.i < len(self.lines):
            if s.j >= self.before[s.i]:  # what it had received was written before it was read
                out += self._handle(s, nxt)
        if nxt is not None:
            if s.pend is not None:
                out += self._answer(s, nxt)
            out += self._event(s, nxt)
        return out

    def _end(self, s: State, kind: str) -> Label | None:
        """The label for ending the current session this way, or None if the partner forbids it."""
        b = self.bounds.get(s.k)
        if b is not None:
            if b.ends is not None and kind not in b.ends:
                return None
            if b.got is not None:
                if s.r < len(b.got) or b.complete and s.r > len(b.got):
                    return None
                if s.r > len(b.got):
                    kind += "+"  # relayed more than the partner got: legal unless it stayed
        return ("end", s.k, kind)

    def _start(self, s: State, peer: int, kind: str, pend: Pending) -> list[Step]:
        b = self.bounds.get(s.k + 1)
        if b is not None and b.starts is not None and kind not in b.starts:
            return []
        return [
            (
                ("start", s.k + 1, kind),
                State(s.i, s.j + 1, True, peer, s.k + 1, pend, 0, s.leaving, False),
            )
        ]

    def _relay(self, s: State, line: str) -> list[Step]:
        b = self.bounds.get(s.k)
        if b is None or b.got is None:  # nothing to count relays against
            return [(None, State(s.i + 1, s.j, True, s.peer, s.k, None, s.r, False, False))]
        if b.got[s.r] == line if s.r < len(b.got) else not b.complete:
            return [(None, State(s.i + 1, s.j, True, s.peer, s.k, None, s.r + 1, False, False))]
        return []

    def _handle(self, s: State, nxt: str | None) -> list[Step]:
        """The server reads line ``s.i``."""
        line, i = self.lines[s.i], s.i + 1
        if line is None or (line == CLOSE if s.busy else free_action(line)[0] == "close"):
            label = self._end(s, "close") if s.busy else None
            if s.busy and label is None:
                return []
            return [(label, State(i, s.j, False, 0, s.k, ("close", 0, 0, False), 0, True, False))]
        if s.busy:
            if line == GOODBYE:
                label = self._end(s, "goodbye")
                pend = ("goodbye", s.peer, s.k, False)
                return (
                    [(label, State(i, s.j, False, 0, s.k, pend, 0, False, False))] if label else []
                )
            return self._relay(s, line)
        action, arg = free_action(line)
        if action == "silent":
            return [(None, s._replace(i=i))]
        if action == "get":
            return [(None, s._replace(i=i, pend=("get", int(arg == "FREE"), 0, False)))]
        if action == "connect":
            return [(None, s._replace(i=i, pend=("connect", int(arg), 0, False)))]
        if nxt is None:
            return []
        if action == "help":
            j = s.j
            while j < len(self.recv) and self.recv[j].startswith("HELP "):
                j += 1
            return [(None, s._replace(i=i, j=j))] if j > s.j else []
        fits = nxt.startswith("ERROR USAGE ") if action == "usage" else nxt == arg
        return [(None, State(i, s.j + 1, False, 0, s.k, None, 0, False, False))] if fits else []

    def _answer(self, s: State, nxt: str) -> list[Step]:
        """``nxt`` answers the pending request."""
        assert s.pend is not None
        what, a, k, overtaken = s.pend
        done: list[Step] = [
            (None, State(s.i, s.j + 1, s.busy, s.peer, s.k, None, s.r, s.leaving, False))
        ]
        if what == "get":
            return done if clients_ok(nxt, self.cid, s.busy, bool(a)) else []
        if what == "connect":
            if s.busy:  # paired by someone else while the CONNECT was on its way
                return done if nxt == f"ERROR TALKING {s.peer}" else []
            if nxt == f"CONNECTED {a}" and a != self.cid:
                return self._start(s, a, "asked", None)
            refusals = (
                ("ERROR SELF",) if a == self.cid else (f"ERROR BUSY {a}", f"ERROR OFFLINE {a}")
            )
            return done if nxt in refusals else []
        if what == "goodbye":
            b = self.bounds.get(k)
            if nxt != f"ENDED {a}" or overtaken and b is not None and not b.overtaken:
                return []
            return [(("overtaken", k, str(overtaken)), done[0][1])]
        if nxt != "BYE":
            return []
        if not s.busy:
            return [(None, s._replace(j=s.j + 1, pend=None, done=True))]
        label = self._end(s, "close")  # paired after its #CLOSE# was read: BYE ends that too
        return [(label, State(s.i, s.j + 1, False, 0, s.k, None, 0, True, True))] if label else []

    def _event(self, s: State, nxt: str) -> list[Step]:
        """``nxt`` was caused by someone else: a pairing, the partner's end, a cut."""
        if nxt.startswith("CONNECTED "):
            peer = _int(nxt[len("CONNECTED ") :])
            if s.busy or peer is None or peer == self.cid:
                return []
            pend = s.pend
            if pend is not None and pend[0] == "goodbye":  # paired before its goodbye was answered
                pend = (pend[0], pend[1], pend[2], True)
            return self._start(s, peer, "asked-by", pend)
        if s.busy and nxt == f"ENDED {s.peer}":
            label = self._end(s, "partner")
            return [(label, s._replace(j=s.j + 1, busy=False, peer=0, r=0))] if label else []
        if nxt in CUTS:
            label = self._end(s, "cut") if s.busy else None
            if s.busy and label is None:
                return []
            return [(label, State(s.i, s.j + 1, False, 0, s.k, None, 0, True, True))]
        return []


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    #: labels on transitions that lie on some accepted path
    labels: frozenset[Label]
    #: the states that explain the most received lines
    furthest: tuple[State, ...]


def explore(replay: Replay) -> Outcome:
    """Every state the server may reach with this client; which of them lead to the end."""
    start = replay.start()
    edges: dict[State, list[Step]] = {}
    levels: list[list[State]] = []  # every step reads a line or explains one: i + j orders them
    todo = [start]
    while todo:
        s = todo.pop()
        if s in edges:
            continue
        steps = edges[s] = replay.successors(s)
        level = s.i + s.j
        while len(levels) <= level:
            levels.append([])
        levels[level].append(s)
        for _, t in steps:
            if t not in edges:
                todo.append(t)
    good: dict[State, bool] = {}
    labels: set[Label] = set()
    for s in (s for level in reversed(levels) for s in level):
        ok = replay.accepting(s)
        if ok and s.busy:
            labels.add(("end", s.k, "open"))
        for label, t in edges[s]:
            if good[t]:
                ok = True
                if label is not None:
                    labels.add(label)
        good[s] = ok
    most = max(s.j for s in edges)
    furthest = tuple(s for s in edges if s.j == most)
    return Outcome(good[start], frozenset(labels), furthest)


def _stuck(t: Transcript, replay: Replay, furthest: tuple[State, ...]) -> Violation:
    """Name the rule a transcript breaks, from the received line no order explains."""
    s = max(furthest, key=lambda s: s.i)
    sent = replay.lines[s.i] if s.i < len(replay.lines) else "(none)"
    where = f"in a session with {s.peer}" if s.busy else "free"
    if s.j >= len(replay.recv):
        return Violation(
            "unanswered",
            t.uid,
            f"the connection ended (id {t.cid}, {where}) without the answer or BYE it was owed;"
            f" next line to handle: {sent!r}",
        )
    line = replay.recv[s.j]
    if line.startswith("CONNECTED ") and all(f.busy for f in furthest):
        rule = "double-session"
    elif line.startswith("ENDED "):
        rule = "unmatched-ended"
    elif line.startswith("MSG "):
        rule = "msg-outside-session"
    else:
        rule = "reply"
    detail = (
        f"id {t.cid}: received line {s.j + 1} {line[:80]!r} fits no order of handling its"
        f" lines (server side {where}; next line to handle: {sent!r})"
    )
    return Violation(rule, t.uid, detail)


# ---- all connections -----------------------------------------------------------------

END_KINDS = ("goodbye", "close", "partner", "cut", "open")
#: the other end got ENDED: this end ended the session, and the other stayed
PARTNER_ONLY = frozenset({"partner"})


@dataclass
class _Conn:
    t: Transcript
    #: per CONNECTED (session k at index k-1): the peer, and the MSG texts after it
    sessions: list[tuple[int, list[str]]]
    #: each sent line (None: shut), and its event index
    sent: list[str | None]
    line_at: list[int]
    #: per session: the event index from which on no line sent can belong to it
    over_at: list[int]
    #: ("start" | "end" | "overtaken", session) -> what some explanation says
    kinds: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    ok: bool = False


def _conn(t: Transcript) -> _Conn:
    c = _Conn(t, [], [], [], [])
    for n, (kind, text) in enumerate(t.events):
        if kind == "recv":
            if text.startswith("CONNECTED "):
                if c.sessions:
                    c.over_at[-1] = min(c.over_at[-1], n)
                c.sessions.append((_int(text[len("CONNECTED ") :]) or 0, []))
                c.over_at.append(len(t.events))
            elif text.startswith("MSG ") and c.sessions:
                c.sessions[-1][1].append(text[len("MSG ") :])
        else:
            c.sent.append(None if kind == "shut" else text)
            c.line_at.append(n)
            # a control line sent after CONNECTED is read after it: the session is over then
            if (kind == "shut" or text in (GOODBYE, CLOSE)) and c.sessions:
                c.over_at[-1] = min(c.over_at[-1], n)
    return c


def _kinds(labels: frozenset[Label]) -> dict[tuple[str, int], frozenset[str]]:
    out: dict[tuple[str, int], set[str]] = defaultdict(set)
    for what, k, kind in labels:
        out[what, k].add(kind)
    return {key: frozenset(v) for key, v in out.items()}


def _count(report: Report, t: Transcript) -> None:
    recv = [text for kind, text in t.events if kind == "recv"]
    report.lines_sent += len(t.events) - len(recv)
    for text in recv:
        if text.startswith("MSG "):
            report.messages += 1
        elif text.startswith("ERROR "):
            report.errors[text.split(" ")[1]] += 1
        elif text.startswith("CLIENTS") and not well_formed(text):
            report.violations.append(Violation("reply", t.uid, f"malformed: {text[:80]!r}"))
    report.cut += bool(recv) and recv[-1] in CUTS and not t.severed
    report.severed += t.severed


def check(transcripts: Iterable[Transcript]) -> Report:
    """Every rule over every transcript; ``report.violations`` is empty when all hold."""
    report = Report()
    conns: dict[int, _Conn] = {}
    lenient: set[int] = set()  # ids with a holder whose sessions may not all show
    for t in transcripts:
        report.connections += 1
        _count(report, t)
        recv = [text for kind, text in t.events if kind == "recv"]
        if t.tail and not t.severed:  # only a process's death cuts a line short
            detail = f"id {t.cid}: the connection closed in the middle of {t.tail[:80]!r}"
            report.violations.append(Violation("partial-line", t.uid, detail))
        if not recv and t.severed and t.closed:
            continue  # its acceptor or worker died before it could say WELCOME
        if not recv or recv[0] != f"WELCOME {t.cid}":
            report.violations.append(Violation("welcome", t.uid, f"first line {recv[:1]}"))
            continue
        if not t.closed:
            report.violations.append(Violation("unfinished", t.uid, f"id {t.cid}: never closed"))
        if not t.closed or t.severed or recv[-1] in CUTS:
            lenient.add(t.cid)  # a cut client is paired and unpaired unseen
        conns[t.uid] = _conn(t)
    partner = _pair(conns, lenient, report)
    report.pairs = sorted((x[0], y[0]) for x, y in partner.items() if x < y)
    report.sessions = len(report.pairs)
    flagged: set[tuple[int, int]] = set()
    for (uid, k), (other, ko) in partner.items():
        flagged |= _check_lines(conns[uid], k, conns[other], ko, report)
    for c in conns.values():
        bounds = _bounds(c, conns, partner)  # no partner replayed yet: what they got, only
        outcome = explore(Replay(c.t, bounds))
        c.ok, c.kinds = outcome.ok, _kinds(outcome.labels)
        if c.ok:
            continue
        bare = Replay(c.t)
        alone = explore(bare) if bounds else outcome
        if alone.ok:
            _blame(c, bounds, flagged, report)
        else:
            report.violations.append(_stuck(c.t, bare, alone.furthest))
    _settle(conns, partner, flagged, report)
    return report


def _pair(
    conns: dict[int, _Conn], lenient: set[int], report: Report
) -> dict[tuple[int, int], tuple[int, int]]:
    """Match each session end to the other: ``(uid, k) -> (uid, k)``."""
    seqs: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for c in sorted(conns.values(), key=lambda c: c.t.born):
        for k, (peer, _) in enumerate(c.sessions, 1):
            seqs[c.t.cid, peer].append((c.t.uid, k))
    partner: dict[tuple[int, int], tuple[int, int]] = {}
    for (a, b), mine in list(seqs.items()):
        if a > b and (b, a) in seqs:
            continue  # each pair once
        theirs = seqs.get((b, a), [])
        if len(mine) != len(theirs) or a == b:
            if a == b or a not in lenient and b not in lenient:
                uid = max(mine, theirs, key=len)[min(len(mine), len(theirs))][0]
                detail = (
                    f"holders of id {a} got {len(mine)} CONNECTED {b},"
                    f" holders of id {b} got {len(theirs)} CONNECTED {a}"
                )
                report.violations.append(Violation("asymmetric", uid, detail))
            continue
        for x, y in zip(mine, theirs, strict=True):
            partner[x], partner[y] = y, x
    return partner


def _check_lines(r: _Conn, kr: int, s: _Conn, ks: int, report: Report) -> set[tuple[int, int]]:
    """Chat lines ``r`` got in session ``kr`` from ``s`` (its session ``ks``), one by one.

    Returns the sender's sessions found at fault, which the replay need not report again.
    """
    got, sent = r.sessions[kr - 1][1], s.sent
    bad: set[tuple[int, int]] = set()
    foreign: set[int] = set()  # positions in got: reported once, left out of the gap check
    last: tuple[int, int] | None = None  # (position in got, seq) of the last line from s

    def flag(rule: str, detail: str) -> None:
        where = f"id {r.t.cid}, session {kr} with id {s.t.cid} (connection {s.t.uid}): "
        report.violations.append(Violation(rule, r.t.uid, where + detail))
        bad.add((s.t.uid, ks))

    for pos, text in enumerate(got):
        parsed = parse_message(text)
        if parsed is None:
            continue
        uid, k, q = parsed
        if uid != s.t.uid or q >= len(sent) or sent[q] != text:
            flag("foreign", f"MSG {text!r} does not come from the partner")
            foreign.add(pos)
            continue
        if k > ks or s.line_at[q] > s.over_at[ks - 1]:
            flag("cross-session", f"MSG {text!r} was sent after that session was over")
        if last is not None:
            if q <= last[1]:
                flag("order", f"MSG {text!r} came after its line {last[1]}")
            else:
                between = sent[last[1] + 1 : q]
                arrived = [got[n] for n in range(last[0] + 1, pos) if n not in foreign]
                if arrived != between:
                    rule = "cross-session" if {GOODBYE, CLOSE, None} & set(between) else "gap"
                    flag(rule, f"between its lines {last[1]} and {q} it sent {between[:3]!r},"
                         f" then came {arrived[:3]!r}")  # fmt: skip
        last = pos, q
    return bad


def _bounds(
    c: _Conn, conns: dict[int, _Conn], partner: dict[tuple[int, int], tuple[int, int]]
) -> dict[int, Bound]:
    """What the other end of each of ``c``'s sessions allows ``c`` to have done.

    What the partner received holds as it is; how the session started and ended
    on the partner's side only once the partner's own replay has succeeded.
    """
    bounds: dict[int, Bound] = {}
    for k in range(1, len(c.sessions) + 1):
        other = partner.get((c.t.uid, k))
        if other is None:
            continue
        r, kr = conns[other[0]], other[1]
        got = tuple(r.sessions[kr - 1][1])
        if not r.ok:
            bounds[k] = Bound(got)
            continue
        r_starts = r.kinds.get(("start", kr))
        r_ends = {e.rstrip("+") for e in r.kinds.get(("end", kr), ())}
        starts = ends = None
        if r_starts:  # exactly one end asked
            starts = frozenset(x for x in ("asked", "asked-by") if r_starts - {x})
        if r_ends:  # at least one end ended it
            ends = frozenset(e for e in END_KINDS if e != "partner" or r_ends - {"partner"})
        stayed = r_ends == {"partner"}
        bounds[k] = Bound(got, stayed, starts, ends, overtaken=not stayed)
    return bounds


def _holds(c: _Conn, bounds: dict[int, Bound]) -> bool:
    """Every explanation of ``c`` found so far already keeps within ``bounds``.

    Labels are collected over every accepted path, so then no path is lost to
    the bounds, and replaying again would find the same.
    """
    for k, b in bounds.items():
        starts = c.kinds.get(("start", k), frozenset())
        ends = c.kinds.get(("end", k), frozenset())
        if b.starts is not None and not starts <= b.starts:
            return False
        if b.ends is not None and not {e.rstrip("+") for e in ends} <= b.ends:
            return False
        if b.complete and any(e.endswith("+") for e in ends):
            return False
        if not b.overtaken and "True" in c.kinds.get(("overtaken", k), ()):
            return False
    return True


def _settle(
    conns: dict[int, _Conn],
    partner: dict[tuple[int, int], tuple[int, int]],
    flagged: set[tuple[int, int]],
    report: Report,
) -> None:
    """Replay each connection bound by its partners' replays, until no explanation changes.

    Bounds only tighten as partners' explanations narrow, so this ends; a
    connection that no explanation fits any more breaks a rule shared by two ends.
    """
    peers: dict[int, set[int]] = defaultdict(set)
    for (uid, _), (other, _) in partner.items():
        peers[uid].add(other)
    work = deque(uid for uid, c in conns.items() if c.ok)
    queued = set(work)
    while work:
        uid = work.popleft()
        queued.discard(uid)
        c = conns[uid]
        bounds = _bounds(c, conns, partner)
        if not c.ok or _holds(c, bounds):
            continue
        outcome = explore(Replay(c.t, bounds))
        if outcome.ok:
            c.kinds = _kinds(outcome.labels)
        else:
            c.ok = False
            _blame(c, bounds, flagged, report)
        for p in peers[uid] - queued:
            queued.add(p)
            work.append(p)


def _blame(
    c: _Conn, bounds: dict[int, Bound], flagged: set[tuple[int, int]], report: Report
) -> None:
    """Say which session, and which of its bounds, no explanation of ``c`` can meet."""

    def fits(k: int, b: Bound) -> bool:
        return explore(Replay(c.t, {k: b})).ok

    def say(rule: str, detail: str) -> None:
        report.violations.append(Violation(rule, c.t.uid, f"{where}: {detail}"))

    blamed = False
    for k, b in sorted(bounds.items()):
        if fits(k, b):
            continue
        blamed = True
        where = f"id {c.t.cid}, session {k} with id {c.sessions[k - 1][0]}"
        got = b.got or ()
        lost = b.complete and fits(k, replace(b, complete=False))
        lines = (
            f"it ended the session, yet the partner, who stayed, got only {len(got)} lines"
            if lost
            else f"the partner's MSG lines {got[:3]!r}... are no in-order prefix of the relayed"
        )
        parts = [  # (rule, that part of b alone, b without it, why)
            ("session-start", Bound(starts=b.starts), replace(b, starts=None), f"{b.starts}"),
            ("ended-late", Bound(overtaken=b.overtaken), replace(b, overtaken=True), "overtaken"),
            ("unmatched-ended", Bound(ends=b.ends), replace(b, ends=None), f"only {b.ends}"),
            ("lost" if lost else "delivery", Bound(b.got, b.complete), Bound(), lines),
        ]
        blame = [(rule, why) for rule, part, _, why in parts if not fits(k, part)]
        if not blame:  # each part fits alone: blame the first one without which the rest fits
            blame = [
                (rule, why + ", given the rest") for rule, _, rest, why in parts if fits(k, rest)
            ]
        for rule, why in blame[:1] or [("inconsistent", "the partner's view fits no reading")]:
            if rule in ("lost", "delivery") and (c.t.uid, k) in flagged:
                continue  # the lines themselves were reported
            say(rule, why)
    if not blamed:
        where = f"id {c.t.cid}"
        say("inconsistent", "its partners' views fit no single reading of its transcript")
