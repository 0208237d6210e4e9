"""Simulated users for the stress test and the soak: people and bots, seeded and bounded.

Each user connects, acts on what it believes (FREE or in a session, from the
lines it has read), and reconnects as a new client after ``#CLOSE#`` or after
closing its sending side, until its operations or the time run out. A
connection that is refused, reset or closed before its ``WELCOME`` is tried
again, a few times in a row at most. Every connection records what it sent
and received, in the order it saw them (a ``rules.Transcript``), for
``scripts.rules.check``, and when it was open (``Load.spans``), so the soak's
chaos can tell which connections a killed process cut.

Beliefs lag behind the server on purpose: a user may chat after its partner
left, or send commands while a CONNECTED is on its way to it. Those races are
what the checker is for. Floods are avoided: bursts are small and every
connection reads all the time, so ``--sendq`` never cuts anyone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scripts.rules import CLOSE, CUTS, GOODBYE, Event, Transcript, message, parse_message


@dataclass(frozen=True, slots=True)
class Plan:
    """How many users, doing what, for how long."""

    clients: int = 200
    #: operations per user, over all its connections; 0: until ``duration``
    ops: int = 40
    seed: int = 1
    #: seconds after which no user starts another operation
    duration: float = 60.0
    #: share of users that are bots (fast bursts); the rest are people (slow, few lines)
    bots: float = 0.5
    #: seconds between a bot's operations, and between a person's
    bot_pause: tuple[float, float] = (0.002, 0.03)
    person_pause: tuple[float, float] = (0.05, 0.3)
    #: seconds a closing connection may wait for BYE and the server's close
    grace: float = 10.0
    #: connections in a row without a WELCOME (refused, reset, cut) before a user gives up
    retries: int = 5


@dataclass
class Load:
    """What a run produced: every connection's transcript, and where each came from."""

    transcripts: list[Transcript] = field(default_factory=list)
    #: uid -> the client's local TCP port, to find which worker served it
    ports: dict[int, int] = field(default_factory=dict)
    #: uid -> the server port it connected to, to tell the hosts of a cluster apart
    servers: dict[int, int] = field(default_factory=dict)
    #: uid -> ``time.monotonic()`` before it connected, and when the server closed it (or,
    #: if it did not, when the user gave up on it)
    spans: dict[int, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Tally:
    """What the load has done so far, counted as it happens (for a progress line)."""

    connections: int = 0
    #: CONNECTED lines read: two per session between two users
    connected: int = 0
    sent: int = 0
    #: MSG lines read
    relayed: int = 0
    #: ERROR lines read
    errors: int = 0
    #: connections the server closed after one of ``rules.CUTS`` (``OUTAGE``, ...)
    cut: int = 0
    #: chat lines that broke a rule as they arrived (see ``Conn.check``)
    violations: int = 0


class _Counters:
    def __init__(self) -> None:
        self.uid = 0
        self.born = 0
        self.tally = Tally()
        #: uid -> connection, so that a receiver can look up what the sender sent
        self.conns: dict[int, Conn] = {}


class Conn:
    """One connection: sends and reads lines, records both, keeps the user's belief."""

    def __init__(
        self,
        uid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tally: Tally | None = None,
    ) -> None:
        self.uid = uid
        self.tally = tally if tally is not None else Tally()
        self.reader = reader
        self.writer = writer
        self.events: list[Event] = []
        self.cid = 0
        self.born = 0
        self.partner: int | None = None  # as far as the lines read so far say
        self.k = 0  # CONNECTED lines read
        self.sent = 0
        self.lines: list[str] = []  # every line sent, by its place (a message's seq)
        #: (sender uid, sender's session) -> seq of the last message read from it
        self.last: dict[tuple[int, int], int] = {}
        self.ids: list[int] = []  # FREE ids from the last CLIENTS line
        self.closed = False  # the server closed the connection
        self.closed_at = 0.0  # time.monotonic() when it saw the close
        self.tail = ""  # a last line the close cut short
        self.gone = False  # this side sent #CLOSE# or shut its sending side
        self.news = asyncio.Event()  # set on every line read

    async def pump(self, counters: _Counters) -> None:
        """Read until the server closes the connection."""
        try:
            while line := await self.reader.readline():
                if not line.endswith(b"\n"):  # only a dying server process leaves one
                    self.tail = line.decode(errors="replace")
                    break
                self.seen(line.decode().removesuffix("\n"), counters)
        except (ConnectionError, ValueError):
            pass  # reset, or a line over the reader's limit: the transcript shows the rest
        self.closed = True
        self.closed_at = time.monotonic()
        last = [text for kind, text in self.events if kind == "recv"][-1:]
        if last and last[0] in CUTS:
            self.tally.cut += 1
        self.news.set()

    def seen(self, text: str, counters: _Counters) -> None:
        self.events.append(("recv", text))
        word, _, rest = text.partition(" ")
        tally = self.tally
        if word == "MSG":
            tally.relayed += 1
            if not self.check(rest, counters.conns):
                tally.violations += 1
        elif word == "CONNECTED":
            tally.connected += 1
        elif word == "ERROR":
            tally.errors += 1
        if word == "WELCOME" and not self.cid:
            self.cid = int(rest)
            counters.born += 1
            self.born = counters.born
        elif word == "CONNECTED":
            self.partner, self.k = int(rest), self.k + 1
            self.last.clear()  # a sender's session number may repeat in this one
        elif word == "ENDED" and self.partner == int(rest):
            self.partner = None
        elif word == "CLIENTS":
            self.ids = [int(w.split("=")[0]) for w in rest.split() if w.endswith("=FREE")]
        self.news.set()

    def check(self, text: str, conns: dict[int, Conn]) -> bool:
        """Whether a chat line passes the rules that need no replay, as it arrives.

        The full checker (``rules.check``) judges once the load is over; this one
        tells the progress line at once about what no interleaving can excuse:
        a line its sender never sent (``foreign``), one that overtook or repeated
        another of the same session (``order``), and one that came although an
        earlier line of that session did not, or after its sender's
        ``#GOODBYE#`` (``gap``). Two lines of one session both delivered mean
        the session was live for every line its sender sent between them.
        Every ``CONNECTED`` starts the bookkeeping anew: lines a sender wrote
        after ``CONNECT`` carry its previous session's number.
        """
        parsed = parse_message(text)
        if parsed is None:
            return True  # a command relayed as chat, or someone else's text: replay's job
        uid, k, q = parsed
        sender = conns.get(uid)
        if sender is None or q >= len(sender.lines) or sender.lines[q] != text:
            return False
        last = self.last.get((uid, k))
        self.last[(uid, k)] = q if last is None else max(q, last)
        if last is None:
            return True
        if q <= last:
            return False
        between = sender.lines[last + 1 : q]
        return not any(x in (GOODBYE, CLOSE) or parse_message(x) for x in between)

    async def send(self, *lines: str) -> None:
        if self.closed:
            return
        for line in lines:
            self.events.append(("sent", line))
            self.lines.append(line)
            self.sent += 1
        self.tally.sent += len(lines)
        self.gone = self.gone or CLOSE in lines
        try:
            self.writer.write("".join(line + "\n" for line in lines).encode())
            await self.writer.drain()
        except ConnectionError:
            pass  # the reader sees the end

    async def chat(self, n: int, rng: random.Random, pad: int, *then: str) -> None:
        """``n`` attributable lines, and ``then`` in the same write."""
        lines: list[str] = []
        for _ in range(n):
            lines.append(
                message(self.uid, self.k, self.sent + len(lines), "x" * rng.randint(0, pad))
            )
        await self.send(*lines, *then)

    async def shut(self) -> None:
        """Close the sending side: the server treats it as ``#CLOSE#``."""
        if self.closed:
            return
        self.events.append(("shut", ""))
        self.gone = True
        try:
            self.writer.write_eof()
        except (ConnectionError, OSError):
            pass

    async def wait(self, seconds: float) -> None:
        """Until a line arrives, or ``seconds`` pass."""
        self.news.clear()
        try:
            await asyncio.wait_for(self.news.wait(), seconds)
        except TimeoutError:
            pass

    def transcript(self) -> Transcript:
        events = tuple(self.events)
        return Transcript(self.uid, self.cid, self.born, events, self.closed, self.tail)


class User:
    """One simulated person or bot, over as many connections as it makes."""

    def __init__(
        self, n: int, plan: Plan, host: str, port: int, out: Load, counters: _Counters
    ) -> None:
        self.rng = random.Random(f"{plan.seed}/{n}")
        self.bot = self.rng.random() < plan.bots
        self.plan = plan
        self.host, self.port = host, port
        self.out = out
        self.counters = counters
        self.ops = plan.ops or 1 << 60

    async def run(self, deadline: float) -> None:
        """Connect again and again; give up after ``retries`` connections in a row that
        the server did not welcome (it may be dead: no point hammering it)."""
        failures = 0
        while self.ops > 0 and time.monotonic() < deadline:
            if await self.connection(deadline):
                failures = 0
                continue
            failures += 1
            if failures >= self.plan.retries:
                return
            await asyncio.sleep(self.rng.uniform(0.05, 0.2) * failures)  # back off, then retry

    async def connection(self, deadline: float) -> bool:
        """One connection, from connect to close; whether it was welcomed."""
        self.counters.uid += 1
        uid = self.counters.uid
        opened = time.monotonic()
        self.out.servers[uid] = self.port
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        except OSError:  # refused or reset: the transcript shows no WELCOME
            self.out.transcripts.append(Transcript(uid, 0, 0, (), True))
            self.out.spans[uid] = (opened, time.monotonic())
            return False
        conn = Conn(uid, reader, writer, self.counters.tally)
        self.counters.conns[uid] = conn
        self.counters.tally.connections += 1
        self.out.ports[uid] = writer.get_extra_info("sockname")[1]
        pump = asyncio.create_task(conn.pump(self.counters))
        try:
            await conn.wait(self.plan.grace)
            while conn.cid and not conn.gone and not conn.closed:
                if self.ops <= 0 or time.monotonic() >= deadline:
                    await (conn.shut() if self.rng.random() < 0.1 else conn.send(CLOSE))
                    break
                self.ops -= 1
                await (self.busy(conn) if conn.partner else self.free(conn))
                low, high = self.plan.bot_pause if self.bot else self.plan.person_pause
                await asyncio.sleep(self.rng.uniform(low, high))
            if not conn.gone and not conn.closed:
                await conn.send(CLOSE)
            try:
                await asyncio.wait_for(asyncio.shield(pump), self.plan.grace)
            except TimeoutError:
                pass  # the transcript says the server never closed it
        finally:
            pump.cancel()
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.plan.grace)
            except (OSError, TimeoutError):
                pass  # a server that reads nothing more must not hold the load up
            self.out.transcripts.append(conn.transcript())
            self.out.spans[uid] = (opened, conn.closed_at or time.monotonic())
        return bool(conn.cid)

    async def free(self, conn: Conn) -> None:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.3:
            await conn.send("GET FREE" if rng.random() < 0.2 else "GET")
            if not self.bot:
                await conn.wait(0.3)
        elif roll < 0.6:
            await conn.send(f"CONNECT {self.target(conn)}")
            if self.bot and rng.random() < 0.3:  # lines right after CONNECT are messages
                await conn.chat(rng.randint(1, 3), rng, 20)
            await conn.wait(0.03 if self.bot else 0.3)
        elif roll < 0.68:
            await conn.send("PING")
        elif roll < 0.7:
            await conn.send(GOODBYE)  # not in a session: ERROR NOT_IN_CHAT
        elif roll < 0.74:
            await conn.send(CLOSE)
        elif roll < 0.76:
            await conn.shut()
        else:
            await conn.wait(0.02 if self.bot else 0.2)  # someone may ask for us

    async def busy(self, conn: Conn) -> None:
        rng, roll = self.rng, self.rng.random()
        n = rng.randint(2, 12) if self.bot else rng.randint(1, 2)
        if roll < 0.6:
            await conn.chat(n, rng, 60 if self.bot else 40)
        elif roll < 0.68:  # last words: every line before the goodbye must still arrive
            await conn.chat(n, rng, 20, GOODBYE if rng.random() < 0.8 else CLOSE)
        elif roll < 0.8:
            await conn.send(GOODBYE)
        elif roll < 0.83:
            await conn.send(CLOSE)
        elif roll < 0.84:
            await conn.shut()

    def target(self, conn: Conn) -> int:
        rng = self.rng
        others = [i for i in conn.ids if i != conn.cid]
        roll = rng.random()
        if roll < 0.02:
            return conn.cid  # ERROR SELF
        if others and roll < 0.9:
            return rng.choice(others)
        return rng.randint(1, self.plan.clients + 5)  # maybe OFFLINE, maybe BUSY


async def load(
    host: str,
    port: int | Sequence[int],
    plan: Plan,
    progress: Callable[[float, Tally], None] | None = None,
) -> Load:
    """Run every user of ``plan`` against the server at ``host:port``.

    With several ports (the hosts of a cluster), user ``n`` makes all its
    connections to ``port[n % len(port)]``: the users are dealt round robin.
    ``progress``, if given, is called once a second with the seconds since the
    start and what the load has done so far.
    """
    ports = [port] if isinstance(port, int) else list(port)
    out = Load()
    counters = _Counters()
    started = time.monotonic()
    deadline = started + plan.duration
    users = [User(n, plan, host, ports[n % len(ports)], out, counters) for n in range(plan.clients)]
    ticker = None
    if progress is not None:
        ticker = asyncio.create_task(_tick(progress, started, counters.tally))
    try:
        await asyncio.gather(*(u.run(deadline) for u in users))
    finally:
        if ticker is not None:
            ticker.cancel()
    out.seconds = time.monotonic() - started
    out.transcripts.sort(key=lambda t: t.uid)
    return out


async def _tick(progress: Callable[[float, Tally], None], started: float, tally: Tally) -> None:
    while True:
        await asyncio.sleep(1.0)  # a clock for the display, not a wait for an event
        progress(time.monotonic() - started, tally)


def run_load(
    host: str, port: int, clients: int, ops: int, seed: int, duration: float
) -> list[Transcript]:
    """Every transcript of a run (see ``Plan`` for what the numbers mean)."""
    plan = Plan(clients=clients, ops=ops, seed=seed, duration=duration)
    return asyncio.run(load(host, port, plan)).transcripts
