"""The matchmaker of one host among several that share a client table in Redis.

With ``--redis``, every decision about ids and sessions is a script in Redis
(``matchmaker.shared``), so that every host sees one table; this host's own
``ClientTable`` mirrors its own clients (their addresses here, their sessions)
and keeps everything that is this host's business alone: moves between its
workers, relays between them, its workers' deaths. Lines of a session between
two hosts go to the partner's host on its Redis stream, and are kept here
until that host confirms them, so that a Redis that was unreachable or lost
its data gets them again (the partner's worker drops what it has had).

One task (``pump``) does everything that reads or changes the state, in the
order it arrived: the workers' messages and the entries of this host's stream.
Only it calls Redis for decisions; a second task reads the stream and a third
beats the heartbeat and reaps dead hosts. When Redis cannot be reached, the
pump stops calling it: what needs the shared table is answered ``ERROR
UNAVAILABLE``; goodbyes and departures are done here and told to Redis when it
is back (``SYNC``); lines wait. After ``--node-ttl`` seconds without Redis,
the sessions with other hosts end (the other hosts end them too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ipc import hosts
from ipc import messages as m
from ipc.channel import Ends, Receiver, Sender
from matchmaker import resp, shared
from matchmaker.proc import booting, child_setup, exit_on_sigterm
from matchmaker.roles import Spawn
from matchmaker.service import Addr, Matchmaker, Startup, address, fresh_links, key_of
from matchmaker.table import ClientTable, Entry, Session
from wire.errors import ErrorCode
from wire.replies import (
    BUSY,
    FREE,
    WAITING,
    Bye,
    Cancelled,
    Clients,
    Ended,
    Error,
    Named,
    Outage,
    Waiting,
)

log = logging.getLogger("matchmaker.cluster")

#: Redis is unreachable: the reply to what needs it.
UNAVAILABLE = Error(ErrorCode.UNAVAILABLE)
#: What a failed Redis call raises: the server is gone, slow, or restarting.
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
#: Not a remote partner's worker: a session with another host is relayed, confirmed.
ELSEWHERE = -1

#: records in one stream entry at most (one entry per host a round, in the common case)
BATCH = 512
READ_COUNT = 1000  # entries per read of this host's stream
READ_BLOCK_MS = 1000  # how long a read waits for one; a reply (maybe empty) comes by then


class Clock:
    """This host's monotonic stamps as wall-clock microseconds, which hosts share.

    Workers stamp with ``time.monotonic_ns``; Redis compares a request's time
    with the target's id's since across hosts, so both are put on the wall
    clock here (hosts kept in step by NTP: a skew only matters for a request
    that races with its target's id being given to a newcomer).
    """

    def __init__(self) -> None:
        self.offset = time.time_ns() - time.monotonic_ns()

    def wall_us(self, mono_ns: int) -> int:
        return (mono_ns + self.offset) // 1000


class ClusterMatchmaker(Matchmaker):
    """The embedded matchmaker's rules, with the shared table deciding what hosts share."""

    def __init__(
        self,
        table: ClientTable[Addr],
        outboxes: list[Sender],
        redis: aioredis.Redis,
        url: str,
        node: str,
        token: str,
        node_ttl: float,
        migrate: bool = True,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        super().__init__(table, outboxes, migrate, clock)
        self.redis = redis
        self.url = url  # for the lanes of the lines' path (resp.Lane): appends and reads
        self.lane: resp.Lane | None = None  # the appends' lane, opened at the first
        self.node = node
        self.token = token
        self.node_ttl = node_ttl
        #: how long a Redis call may take before it counts as failed (made twice, then
        #: Redis is down): a quarter of --node-ttl, one heartbeat's interval
        self.timeout = max(0.1, node_ttl / 4)
        self.scripts = {name: redis.register_script(shared.source(name)) for name in shared.SCRIPTS}
        self.wall = Clock()
        self.remote: dict[int, str] = {}  # our client -> its partner's host ("" unknown yet)
        self.outbound: dict[int, deque[tuple[int, str]]] = {}  # lines not yet confirmed
        self.heard: dict[int, int] = {}  # our client -> the newest session it was told of
        #: our client -> (partner, session) of its last session with another host's client,
        #: for a Redis that lost its table (sessions within this host: ``Entry.last_session``)
        self.last_remote: dict[int, tuple[int, int]] = {}
        # news for a client moving between workers: applied once it has landed
        self.parked: dict[int, list[hosts.Event]] = {}
        self.progress: set[int] = set()  # our clients whose lines were confirmed since a beat
        self.todo: deque[tuple[str, Any, Any]] = deque()  # ("w", worker, msg) / ("o", op, arg)
        # this host's stream, fetched by the pump alone, in order; applied before the next
        # worker message, and up to its mark before a decision's outcome
        self.events: deque[tuple[shared.StreamId, bytes, list[bytes]]] = deque()
        self.fetched: shared.StreamId = (0, 0)  # the newest entry fetched
        self.arrived = asyncio.Event()  # the reader fetched more
        self.nested: list[tuple[str, Any, Any]] | None = None
        self.pump_task: asyncio.Task[None] | None = None
        # requests decided in Redis, by message type (the rest are the embedded handlers)
        self._decisions: dict[type, Callable[[int, Any], Awaitable[None]]] = {
            m.Register: self._register_shared,
            m.Get: self._get_shared,
            m.Connect: self._connect_shared,
            m.Goodbye: self._goodbye_shared,
            m.Drop: self._drop_shared,
            m.Match: self._match_shared,
            m.Cancel: self._cancel_shared,
            m.Name: self._name_shared,
        }
        self.waited: dict[int, int] = {}  # our client -> since when it waits (wall, µs)
        self.settling = False  # the pump is at work (a decision may be half made)
        self.unanswered = 0  # appends sent and not yet answered (``_answered``)
        self.answered = asyncio.Event()  # ... none left
        self.retry: list[tuple[bytes, int]] = []  # appends whose lane ended first
        self.writes: list[tuple[str, str]] = []  # (stream, record) to append, in order
        # new connections waiting for an id while the table is (re)built, since when
        self.held: list[tuple[int, m.Register, float]] = []
        self.wake = asyncio.Event()
        self.joined = asyncio.Event()  # registered under our token since the last SYNC
        self.epoch = ""  # Redis's epoch at our last SYNC: another one means it lost its data
        self.down_since: float | None = None  # Redis unreachable since (monotonic)
        self.gave_up = False  # sessions with other hosts ended for this outage
        self.dirty = False  # changed while Redis was unreachable: SYNC when it is back
        self.sync_queued = False
        # the table is rebuilt from the workers' hellos (``Startup``): until then this
        # process knows none of the host's clients, and must not tell Redis it has none
        self.restored = False
        self.run = secrets.token_hex(4)  # this process, in the ids of its decisions
        self.ops = 0

    # ---- what comes in ------------------------------------------------------------

    def handle(self, worker: int, batch: Any) -> None:
        """Queue a worker's messages: at the end, as they arrive, or right after the
        current one when a step hands on requests (the embedded rules call this from
        inside a step, for requests that waited for a move, say)."""
        if self.nested is not None and asyncio.current_task() is self.pump_task:
            self.nested.extend(("w", worker, msg) for msg in batch)
            return
        if not self.settling and not self.todo:
            # Nothing before them: lines and confirmations, which need no answer from
            # Redis, are handled here and now rather than a turn of the loop later.
            done = 0
            for msg in batch:
                t = type(msg)
                if t is m.Relay:
                    self._relay(worker, msg)
                elif t is m.Received:
                    self._received(worker, msg)
                else:
                    break
                done += 1
            if done:
                self.flush()
                self._append_now()
                batch = batch[done:]
        if batch:  # from the loop's readers, even while the pump waits on Redis
            self.todo.extend(("w", worker, msg) for msg in batch)
            self.wake.set()

    def op(self, name: str, arg: Any = None) -> None:
        self.todo.append(("o", name, arg))
        self.wake.set()

    async def pump(self) -> None:
        """Handle everything in order, forever; a Redis call waits for its answer."""
        self.pump_task = asyncio.current_task()
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.settling = True
            try:
                await self.settle()
            finally:
                self.settling = False

    async def settle(self) -> None:
        """Handle everything queued, and what that queues, until nothing is left.

        The stream's news goes first: it happened before any decision still to make.
        """
        while True:
            self._apply(None)
            if not self.todo:
                break
            kind, a, b = self.todo.popleft()
            self.nested = []
            try:
                if kind == "w":
                    await self._step(a, b)
                else:
                    await self._op(a, b)
            except Exception:
                log.exception("while handling %s %r", kind, b)
            nested, self.nested = self.nested, None
            self.todo.extendleft(reversed(nested))
            if not self.todo:
                self.flush()
                self._append_now()

    def _apply(self, upto: shared.StreamId | None) -> None:
        """The news fetched, up to ``upto`` (all of it with None), in order."""
        events = self.events
        while events and (upto is None or events[0][0] <= upto):
            _, entry_id, fields = events.popleft()
            try:
                self._event(entry_id, fields)
            except Exception:
                log.exception("while applying stream entry %s", entry_id)

    async def _upto(self, mark: bytes | str) -> None:
        """Apply every entry of this host's stream up to ``mark``: what Redis decided before
        the decision that returned it."""
        at = shared.stream_id(mark)
        while self.fetched < at and not self.down:  # the reader is on its way to it
            self.arrived.clear()
            try:
                async with asyncio.timeout(self.timeout):
                    await self.arrived.wait()
            except TimeoutError:
                log.warning("stream entries up to %s did not come in time", mark)
                break
        self._apply(at)

    async def _step(self, worker: int, msg: Any) -> None:
        t = type(msg)
        if t is m.Relay:
            self._relay(worker, msg)
        elif t is m.Received:
            self._received(worker, msg)
        elif (decide := self._decisions.get(t)) is not None:
            await self._write()  # lines go out before the goodbye that follows them
            await decide(worker, msg)
        else:
            self._handlers[t](worker, msg)

    async def _op(self, name: str, arg: Any) -> None:
        if name == "sync":
            if not self.restored:  # a SYNC of an empty table would drop the workers'
                self.sync_queued = False  # clients in Redis: ``restore`` queues one
                return
            await self._sync()
        elif name == "gone":
            await self._worker_gone(arg)
        elif name == "held":
            held, self.held = self.held, []
            for worker, msg, since in held:
                if time.monotonic() - since > self.node_ttl:
                    self.outboxes[worker].send(m.Refuse.of(msg.key, UNAVAILABLE))
                else:
                    await self._register_shared(worker, msg, since)
        elif name == "appended":
            await self._write()
        elif name == "give up":
            self._give_up()
        elif name == "resend":
            await self._where()
            self._resend(stalled_only=True)
        elif name == "requeue":
            me = self.table.get(arg)
            if me is not None and not me.session and self.table.waiting(arg):
                args = [self.node, self.token, arg, int(me.new)]
                if await self._call("requeue", args) is None:
                    self.dirty = True  # the next SYNC puts it back in the line

    # ---- Redis ----------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def _lost_redis(self, exc: BaseException) -> None:
        if self.down_since is None:
            log.error("Redis unreachable: %s", exc or type(exc).__name__)
            self.down_since = time.monotonic()
        self.dirty = True

    async def _call(self, name: str, args: list[Any]) -> Any:
        """A script's reply, or None when Redis cannot be reached (or answers nonsense).

        A call that fails is made once more before Redis counts as down: a timeout may
        only mean this process was stopped for a while. Decisions carry an ``op`` id,
        so the second call gets the first one's answer if the first was made.
        """
        if self.down:
            return None
        if name in shared.ONCE:
            self.ops += 1
            args = [*args, f"{self.run}.{self.ops}"]
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self.timeout):
                    return await self.scripts[name](args=args)
            except _DOWN as exc:
                if attempt == 2:
                    self._lost_redis(exc)
            except RedisError as exc:  # a key of the wrong type: someone else writes there
                log.error("Redis refused %s: %s", name, exc)
                break
        return None

    async def _write(self) -> None:
        """Append what waits, and wait until every append made so far is in Redis: a
        decision that follows must come after them in every stream."""
        self._append_now()
        if self.unanswered:
            self.answered.clear()
            try:
                async with asyncio.timeout(self.timeout):
                    await self.answered.wait()
            except TimeoutError:  # the lane's callbacks put them in ``retry``
                if self.lane is not None:
                    self.lane.abort(TimeoutError("appends unanswered"))
        retry, self.retry = self.retry, []
        for payload, count in retry:
            if self.down:
                break  # lines wait in ``outbound``; confirmations come again
            try:
                await _twice(partial(self._append, payload, count), self.timeout)
            except _DOWN as exc:
                self._lost_redis(exc)

    def _append_now(self) -> None:
        """Send the appends waiting, one entry per host, without waiting for the answer:
        the pump waits for it only before a decision (``_write``)."""
        if not self.writes or self.down:
            self.writes.clear()  # lines wait in ``outbound``; confirmations come again
            return
        writes, self.writes = self.writes, []

        batches: dict[str, list[str]] = {}  # one entry per host and round, in order
        for key, record in writes:
            batches.setdefault(key, []).append(record)

        appends = [
            resp.pack("XADD", key, "NOMKSTREAM", "*", "m", "\n".join(records[i : i + BATCH]))
            for key, records in batches.items()  # NOMKSTREAM: a reaped host's stream stays gone
            for i in range(0, len(records), BATCH)
        ]
        payload, count = b"".join(appends), len(appends)
        lane = self.lane
        if lane is None or lane.broken or self.retry:  # connecting waits: the pump does it
            self.retry.append((payload, count))
            self.op("appended")
            return
        self.unanswered += 1
        lane.send(payload, count, partial(self._answered, payload, count))

    def _answered(self, payload: bytes, count: int, replies: list[Any] | None) -> None:
        self.unanswered -= 1
        if not self.unanswered:
            self.answered.set()
        if replies is None:  # the lane ended first: made again, in order, by the pump
            self.retry.append((payload, count))
            self.op("appended")
            return
        for reply in replies:
            if isinstance(reply, resp.ReplyError):  # a key of the wrong type, say
                log.error("Redis refused an append: %s", reply)

    async def _append(self, payload: bytes, count: int) -> None:
        lane = self.lane
        if lane is None or lane.broken:
            lane = self.lane = await resp.connect(self.url)
        try:
            replies = await lane.ask(payload, count)
        except BaseException:  # a timeout among them: what comes after it is not ours
            lane.abort()
            raise
        for reply in replies:
            if isinstance(reply, resp.ReplyError):  # a key of the wrong type, say
                log.error("Redis refused an append: %s", reply)

    def _send(self, node: str, event: hosts.Event) -> None:
        if node and not self.down:
            self.writes.append((shared.stream(node), hosts.encode(event)))

    # ---- decisions ------------------------------------------------------------------

    async def _register_shared(
        self, worker: int, msg: m.Register, held: float | None = None
    ) -> None:
        """An id for a new connection; held (up to ``--node-ttl``) while the table is rebuilt."""
        if len(self.table) >= self.table.max_clients:
            self.outboxes[worker].send(m.Refuse.of(msg.key, Error(ErrorCode.FULL)))
            return
        held = time.monotonic() if held is None else held
        if not self.joined.is_set() and not self.down:
            self.held.append((worker, msg, held))  # not registered yet: SYNC first
            return
        since = self.clock()
        reply = await self._call("register", [self.node, self.token, self.wall.wall_us(since)])
        if reply is None:
            self.outboxes[worker].send(m.Refuse.of(msg.key, UNAVAILABLE))
            return
        status = _text(reply[0])
        if status != "OK":
            if status == "LOST":
                self._rejoin()
            self.held.append((worker, msg, held))  # WAIT: no id during a rebuild
            return
        cid = int(reply[1])
        try:
            entry = self.table.admit(cid, address(worker, msg.key), since)
        except Exception:
            log.error("Redis gave id %d, which this host holds already", cid)
            await self._call("drop", [self.node, self.token, cid])
            self.outboxes[worker].send(m.Refuse.of(msg.key, UNAVAILABLE))
            return
        entry.pinned = msg.pinned
        self.counts[worker] += 1
        self.heard[cid] = 0
        self._to(entry, m.Welcome(msg.key, entry.id, since))

    async def _get_shared(self, worker: int, msg: m.Get) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        if self.down:
            self._to(me, m.Answer.of(msg.key, UNAVAILABLE))
            return

        def listing() -> Awaitable[list[Any]]:  # a fresh pipeline for each try
            pipe = self.redis.pipeline(transaction=True)
            pipe.hkeys(shared.PREFIX + "owner")
            pipe.hkeys(shared.PREFIX + "session")
            pipe.zrange(shared.PREFIX + "line", 0, -1)
            pipe.hgetall(shared.PREFIX + "name")
            pipe.xrevrange(shared.stream(self.node), "+", "-", 1)
            return pipe.execute()

        try:
            owners, busy, line, names, last = await _twice(listing, self.timeout)
        except _DOWN as exc:
            self._lost_redis(exc)
            self._to(me, m.Answer.of(msg.key, UNAVAILABLE))
            return
        except RedisError as exc:
            log.error("Redis refused GET: %s", exc)
            self._to(me, m.Answer.of(msg.key, UNAVAILABLE))
            return
        await self._upto(last[0][0] if last else "0-0")  # what it hears before the list
        in_session = {int(c) for c in busy}
        waiting = {int(c) for c in line}
        named = {int(c): _text(n) for c, n in names.items()}
        listed = []
        for c in sorted(int(c) for c in owners):
            status = BUSY if c in in_session else WAITING if c in waiting else FREE
            if status == FREE or not msg.free_only:
                listed.append((c, status, named.get(c, "")))
        self._to(me, m.Answer.of(msg.key, Clients(tuple(listed))))

    async def _connect_shared(self, worker: int, msg: m.Connect) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None:
            return
        local = self.table.named(msg.name) if msg.name else None
        if self._waits(msg if local is None else msg._replace(target=local, name=""), me):
            return  # a target of this host on its way to another worker: asked by id after
        asked = self.wall.wall_us(msg.asked) if msg.asked else 0
        args = [self.node, self.token, msg.cid, msg.target, asked, msg.name]
        reply = await self._call("connect", args)
        status = await self._decided(me, msg.key, reply)
        if status == "OK":
            await self._paired_shared(me, msg.key, reply)
        elif status == "NONAME":
            self._to(me, m.Answer.of(msg.key, Error(ErrorCode.OFFLINE, msg.name)))
        elif status in ("SELF", "OFFLINE", "BUSY"):
            detail = "" if status == "SELF" else _text(reply[1])
            self._to(me, m.Answer.of(msg.key, Error(ErrorCode(status), detail)))

    async def _match_shared(self, worker: int, msg: m.Match) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        since = self.wall.wall_us(msg.asked or self.clock())
        reply = await self._call("match", [self.node, self.token, msg.cid, int(msg.new), since])
        status = await self._decided(me, msg.key, reply)
        if status == "OK":
            await self._paired_shared(me, msg.key, reply, msg)
        elif status == "QUEUED":
            self.table.wait(msg.cid, msg.new)
            self.waited[msg.cid] = since
            self._to(me, m.Answer.of(msg.key, Waiting()))
        elif status == "WAITING":
            self._to(me, m.Answer.of(msg.key, Error(ErrorCode.WAITING)))

    async def _cancel_shared(self, worker: int, msg: m.Cancel) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        reply = await self._call("cancel", [self.node, self.token, msg.cid])
        status = await self._decided(me, msg.key, reply)
        if status == "OK":
            self.table.unwait(msg.cid)
            self._to(me, m.Answer.of(msg.key, Cancelled()))
        elif status == "NOT_WAITING":
            self.table.unwait(msg.cid)
            self._to(me, m.Answer.of(msg.key, Error(ErrorCode.NOT_WAITING)))

    async def _name_shared(self, worker: int, msg: m.Name) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None or self._waits(msg, me):
            return
        reply = await self._call("name", [self.node, self.token, msg.cid, msg.name])
        status = await self._decided(me, msg.key, reply)
        if status == "OK":
            self._named(msg.cid, msg.name)
            self._to(me, m.Answer.of(msg.key, Named(msg.name)))
        elif status == "TAKEN":
            self._to(me, m.Answer.of(msg.key, Error(ErrorCode.NAME_TAKEN, msg.name)))

    def _named(self, cid: int, name: str) -> None:
        """This host's copy of a name Redis gave (for the next SYNC, and CONNECT's moves)."""
        holder = self.table.named(name) if name else None
        if holder is not None and holder != cid:  # it has another name by now, elsewhere
            self.table.name(holder, "")
        self.table.name(cid, name)

    async def _decided(self, me: Entry[Addr], key: int, reply: Any) -> str:
        """A decision's status, once the news before it is applied; answers what every
        decision about ``me`` may answer alike (Redis unreachable, ``TALKING``, ``LOST``)."""
        if reply is None:
            self._to(me, m.Answer.of(key, UNAVAILABLE))
            return ""
        status = _text(reply[0])
        if status == "LOST":
            self._rejoin()
            self._to(me, m.Answer.of(key, UNAVAILABLE))
            return status
        await self._upto(reply[-1])  # what its client and the target hear first
        if status == "TALKING":
            peer, sid, node = int(reply[1]), int(reply[2]), _text(reply[3])
            if me.session != sid and node and node != self.node:
                self._over(me)
                self._pair_remote(me, sid, peer, node, requested=False)  # its news is on its way
            self._to(me, m.Answer.of(key, Error(ErrorCode.TALKING, str(peer))))
        return status

    async def _paired_shared(
        self, me: Entry[Addr], key: int, reply: Any, match: m.Match | None = None
    ) -> None:
        """Redis paired ``me`` (the requester) with the target in ``reply`` (OK)."""
        sid, node, target = int(reply[1]), _text(reply[2]), int(reply[3])
        self._over(me)  # Redis found it FREE: a session still held here is over
        if node != self.node:
            self._pair_remote(me, sid, target, node, requested=True)
            return
        other = self.table.get(target)
        if other is None:
            log.error("Redis paired %d with %d, unknown here", me.id, target)
            await self._call("goodbye", [self.node, self.token, me.id, sid])
            self._to(me, m.Answer.of(key, Error(ErrorCode.OFFLINE, str(target))))
            return
        self._over(other)
        session = self.table.pair(me.id, target, sid)
        self.heard[me.id] = self.heard[target] = sid
        self._formed(session, match)

    async def _goodbye_shared(self, worker: int, msg: m.Goodbye) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is None:
            return
        if me.session == msg.session and msg.session:
            reply = await self._call("goodbye", [self.node, self.token, msg.cid, msg.session])
            if reply is None:
                self.dirty = True  # told to Redis by the next SYNC
            elif len(reply) > 1:
                await self._upto(reply[-1])
        if me.session == msg.session and msg.session:  # still: no news ended it meanwhile
            if msg.cid in self.remote:
                self._clear_remote(me)
            else:
                self._tell_ended(msg.cid, self.table.goodbye(msg.cid, msg.session))
        self._to(me, m.Answer.of(msg.key, Ended(msg.peer)))

    async def _drop_shared(self, worker: int, msg: m.Drop) -> None:
        me = self._asker(worker, msg.cid, msg.key)
        if me is not None:
            reply = await self._call("drop", [self.node, self.token, msg.cid])
            if reply is None:
                self.dirty = True
            elif reply:
                await self._upto(reply.pop())
            for _, sid, peer, node in reply or ():
                # Paired by another host just before it left, the news still on its way:
                # it hears CONNECTED before its BYE, as its partner hears ENDED after its own
                if int(sid) and int(sid) > me.session and _text(node) not in ("", self.node):
                    self._over(me)
                    self._pair_remote(me, int(sid), int(peer), _text(node), requested=False)
            dropped = self._forget(msg.cid)
            if dropped is not None:
                self._tell_ended(msg.cid, dropped[1])
        if msg.answer:
            self.outboxes[worker].send(m.Refuse.of(msg.key, Bye()))

    async def _worker_gone(self, worker: int) -> None:
        before = {e.id for e in self.table.entries()}
        super().worker_gone(worker)
        gone = before - {e.id for e in self.table.entries()}
        if gone and await self._call("drop", [self.node, self.token, *sorted(gone)]) is None:
            self.dirty = True

    def worker_gone(self, worker: int) -> None:
        self.op("gone", worker)

    # ---- sessions with other hosts --------------------------------------------------

    def _pair_remote(
        self, me: Entry[Addr], sid: int, peer: int, node: str, requested: bool
    ) -> None:
        self.table.unwait(me.id)
        me.session, me.peer = sid, peer
        self.table.mark_busy(me.id)
        self.remote[me.id] = node
        self.outbound[me.id] = deque()
        self.heard[me.id] = max(self.heard.get(me.id, 0), sid)
        self._to(me, m.Paired(key_of(me.addr), sid, peer, ELSEWHERE, 0, requested))

    def _clear_remote(self, me: Entry[Addr]) -> None:
        """``me`` is out of its session with another host (it knows, or is told now)."""
        if me.session and me.peer:
            self.last_remote[me.id] = (me.peer, me.session)
        me.session, me.peer = 0, None
        self.remote.pop(me.id, None)
        self.outbound.pop(me.id, None)

    def _end_remote(self, me: Entry[Addr], peer: int) -> None:
        sid = me.session
        self._clear_remote(me)
        self._to(me, m.Ended(key_of(me.addr), sid, peer))

    def _over(self, me: Entry[Addr]) -> None:
        """Redis has ended the session ``me`` holds here, and the news is still on its way
        (on this host's stream): end it now, so that ``me`` hears ``ENDED`` before
        anything that follows in Redis, as on one host."""
        if not me.session:
            return
        if me.id in self.remote:
            self._end_remote(me, me.peer or 0)
        else:
            self._end_local(me.id, me.session)

    def _end_local(self, cid: int, sid: int) -> None:
        """Both ends here hear ``ENDED``: the shared table says their session is over."""
        session = self.table.goodbye(cid, sid)
        if session is not None:
            self._tell_ended(session.a.id, session)
            self._tell_ended(session.b.id, session)

    def _forget(self, cid: int) -> tuple[Entry[Addr], Session[Addr] | None] | None:
        me = self.table.get(cid)
        if me is not None and cid in self.remote:
            self._clear_remote(me)
        self.heard.pop(cid, None)
        self.last_remote.pop(cid, None)
        self.parked.pop(cid, None)
        self.waited.pop(cid, None)
        return super()._forget(cid)

    def _elsewhere(self, cid: int) -> bool:
        return True

    def _connect(self, worker: int, msg: m.Connect) -> None:
        self.handle(worker, [msg])  # decided by Redis, in the pump

    def _match(self, worker: int, msg: m.Match) -> None:
        self.handle(worker, [msg])  # asked again (its target left as it moved): in the pump

    def _requeue(self, cid: int) -> bool:
        """Back at the head of the line here, and in Redis before anything else is decided."""
        if not super()._requeue(cid):
            return False
        item = ("o", "requeue", cid)
        if self.nested is not None:
            self.nested.insert(0, item)
        else:
            self.todo.appendleft(item)
            self.wake.set()
        return True

    def _in_session(self, msg: m.Relay | m.Received) -> Entry[Addr] | None:
        """The sender, if it is still in the session ``msg`` belongs to (else the message
        is late: the session ended while it was on its way)."""
        me = self.table.get(msg.cid)
        if me is None or me.session != msg.session or me.peer is None:
            return None
        return me

    def _relay(self, worker: int, msg: m.Relay) -> None:
        node = self.remote.get(msg.cid)
        if node is None:
            super()._relay(worker, msg)
            return
        me = self._in_session(msg)
        if me is None:
            return
        out = self.outbound[msg.cid]
        if out and out[-1][0] >= msg.seq:
            return  # sent again by a worker after a matchmaker restart: we still have it
        out.append((msg.seq, msg.text))
        self._send(node, hosts.Line(me.peer or 0, msg.session, msg.seq, msg.text))

    def _received(self, worker: int, msg: m.Received) -> None:
        node = self.remote.get(msg.cid)
        if node is None:
            super()._received(worker, msg)
            return
        me = self._in_session(msg)
        if me is not None:
            self._send(node, hosts.Confirmed(me.peer or 0, msg.session, msg.seq))

    def _event(self, entry_id: bytes, fields: list[bytes]) -> None:
        """One entry of this host's stream: news for its clients, one record a line.

        Read with ``NOACK`` and trimmed by the heartbeat: a line lost after it was read
        (this process dying before its worker had it) is sent again by its sender, which
        keeps every line until the receiving worker confirms it; a pairing or an end
        lost so is told again by the SYNC of the next process.
        """
        try:
            if not isinstance(fields, list) or len(fields) != 2 or fields[0] != b"m":
                raise ValueError(f"fields {fields[::2]!r}")
            records = fields[1].decode().split("\n")
        except (ValueError, UnicodeDecodeError) as exc:
            log.error("stream entry %s is not ours: %s", entry_id, exc)
            return
        for record in records:
            try:
                event = hosts.decode(record)
            except ValueError as exc:
                log.error("stream entry %s is not ours: %s", entry_id, exc)
                continue
            self._news(event)

    def _news(self, event: hosts.Event) -> None:
        me = self.table.get(event.cid)
        move = self.moves.get(event.cid)
        if event.cid in self.parked or (move is not None and move.mover == event.cid):
            # it is on its way to another worker: what concerns it waits until it lands
            self.parked.setdefault(event.cid, []).append(event)
            return
        if type(event) is hosts.Line:
            if me is not None and me.session == event.session and event.cid in self.remote:
                self._to(me, m.Deliver(key_of(me.addr), event.session, event.text, event.seq))
        elif type(event) is hosts.Confirmed:
            if me is not None and me.session == event.session and event.cid in self.remote:
                out = self.outbound[event.cid]
                while out and out[0][0] <= event.seq:
                    out.popleft()
                self.progress.add(event.cid)
                self._to(me, m.Confirm(key_of(me.addr), event.session, event.seq))
        elif type(event) is hosts.EndedBy:
            if me is not None and me.session == event.session:
                if event.cid in self.remote:
                    self._end_remote(me, event.peer)
                else:  # a session of two clients here, ended by a lapsed rebuild
                    self._end_local(event.cid, event.session)
        elif type(event) is hosts.PairedWith:
            self._paired_from(event)

    def _paired_from(self, event: hosts.PairedWith) -> None:
        me = self.table.get(event.cid)
        if me is None or me.session == event.session:
            return  # gone (its drop ends the session for the requester), or known already
        if me.session > event.session:
            return  # a session that is over already: the one held here came after it
        self._over(me)  # Redis found it FREE: its last session ended, the news on its way
        self._pair_remote(me, event.session, event.peer, event.node, requested=False)

    def _placed(self, worker: int, msg: m.Placed) -> None:
        known = msg.cid in self.table
        super()._placed(worker, msg)
        if not known and msg.cid in self.table and self.nested is not None:
            # Taken back here (it was on its way to a worker that died, and its id was
            # freed): Redis must hold it again before anything it asked is decided.
            self.nested.insert(0, ("o", "sync", None))
        move = self.moves.get(msg.cid)
        if move is None or move.mover != msg.cid:  # landed (or stayed): its news, in order
            for event in self.parked.pop(msg.cid, ()):
                self._news(event)

    # ---- faults ---------------------------------------------------------------------

    def _rejoin(self) -> None:
        if self.joined.is_set():
            self.joined.clear()
            self._want_sync()

    def _want_sync(self) -> None:
        if not self.sync_queued:
            self.sync_queued = True
            self.op("sync")

    def _give_up(self) -> None:
        """Redis has been unreachable for ``--node-ttl``: sessions with other hosts end."""
        ended = 0
        for cid in list(self.remote):
            me = self.table.get(cid)
            if me is not None:
                self._end_remote(me, me.peer or 0)
                ended += 1
        held, self.held = self.held, []
        for worker, msg, _ in held:
            self.outboxes[worker].send(m.Refuse.of(msg.key, UNAVAILABLE))
        log.error("Redis unreachable for %gs: %d sessions with other hosts ended",
                  self.node_ttl, ended)  # fmt: skip

    def _resend(self, stalled_only: bool = False) -> None:
        """Lines not yet confirmed, again (the partner's worker drops what it has had).

        ``stalled_only``: only for sessions with no confirmation since the last
        heartbeat (an entry lost with a Redis that restarted, say): a timer, as
        TCP retransmits, that costs nothing while lines are being confirmed.
        """
        progress, self.progress = self.progress, set()
        for cid, node in self.remote.items():
            me = self.table.get(cid)
            if me is None or me.peer is None or (stalled_only and cid in progress):
                continue
            for seq, text in self.outbound.get(cid, ()):
                self._send(node, hosts.Line(me.peer, me.session, seq, text))

    async def _sync(self) -> None:
        """Tell Redis everything this host holds; take its word for what it decided."""
        self.sync_queued = False
        entries = self.table.entries()
        args: list[Any] = [self.node, self.token, self._alive_ms(), self._alive_ms(),
                           secrets.token_hex(8), self.epoch, len(entries)]  # fmt: skip
        for e in entries:
            waiting = 0
            if not e.session and self.table.waiting(e.id):
                waiting = self.waited.get(e.id) or self.wall.wall_us(self.clock())
            last_peer, last_sid = self.last_remote.get(e.id, (0, 0))
            if e.last_peer is not None and e.last_session > last_sid:
                last_peer, last_sid = e.last_peer[0], e.last_session
            args += [e.id, self.wall.wall_us(int(e.since)), e.session, e.peer or 0,
                     self.heard.get(e.id, 0), e.name, waiting,
                     int(self.table.asked_new(e.id)), last_peer, last_sid]  # fmt: skip
        epoch = await self._epoch()
        reply = await self._call("sync", args)
        if reply is None or epoch is None:
            return  # the next heartbeat tries again
        self.down_since = None
        self.gave_up = False
        self.dirty = False
        self.epoch = epoch
        result = shared.synced(reply)
        for cid in result.refused:
            me = self.table.get(cid)
            if me is not None:
                log.warning("client %d lost its id to another host; closed", cid)
                self._to(me, m.Refuse.of(key_of(me.addr), Outage()))
                self._forget(cid)
        for cid in result.unnamed:
            if cid in self.table:
                log.error("client %d lost its name to a client of another host", cid)
                self.table.name(cid, "")
        for cid, sid, peer in result.ended:
            me = self.table.get(cid)
            if me is None or me.session != sid:
                continue
            if cid in self.remote:
                self._end_remote(me, peer)
            else:
                self._end_local(cid, sid)
        for cid, sid, peer, node in result.paired:
            me = self.table.get(cid)
            if me is None or me.session:
                continue
            if node == self.node and peer in self.table:
                self.table.pair(cid, peer, sid)
                self.heard[cid] = sid
                self._paired(me, self.table.get(peer), sid, requested=False)  # type: ignore[arg-type]
            else:
                self._pair_remote(me, sid, peer, node, requested=False)
        await self._where()
        self.joined.set()
        if self.lane is None or self.lane.broken:  # the appends' lane, ready before a line
            try:
                async with asyncio.timeout(self.timeout):
                    self.lane = await resp.connect(self.url)
            except _DOWN as exc:  # the first append tries again
                log.warning("opening the appends' connection: %s", exc)
        self._resend()
        if self.held:
            self.op("held")
        log.info("registered %d clients in the shared table", len(entries))

    async def _where(self) -> None:
        """Find the host of each partner elsewhere that this process does not know yet."""
        unknown = {e.id: e.peer for e in self.table.entries()
                   if e.session and e.peer is not None and e.peer not in self.table
                   and not self.remote.get(e.id)}  # fmt: skip
        if not unknown:
            return
        try:
            owners = await _twice(
                lambda: self.redis.hmget(shared.PREFIX + "owner", list(unknown.values())),
                self.timeout,
            )
        except RedisError as exc:
            log.error("looking up partners' hosts: %s", exc)
            return
        for cid, owner in zip(unknown, owners, strict=True):
            self.remote[cid] = _text(owner) if owner is not None else ""
            self.outbound.setdefault(cid, deque())

    async def _epoch(self) -> str | None:
        try:
            value = await _twice(lambda: self.redis.get(shared.PREFIX + "epoch"), self.timeout)
        except _DOWN as exc:
            self._lost_redis(exc)
            return None
        return _text(value) if value is not None else ""

    def _alive_ms(self) -> int:
        return int(self.node_ttl * 750)  # a host that misses three beats is dead

    # ---- restart of this host's matchmaker -----------------------------------------

    def restore(self, hellos: dict[int, m.Hello]) -> None:
        self.restored = True
        for hello in hellos.values():
            for st in hello.clients:
                self.heard[st.cid] = st.last_session
                if st.waiting is not None:
                    self.waited[st.cid] = self.wall.wall_us(st.waiting)
        self.sync_queued = True
        self.todo.appendleft(("o", "sync", None))  # before anything the hellos ask
        super().restore(hellos)
        for e in self.table.entries():
            if e.session and e.peer is not None and e.peer not in self.table:
                self.remote[e.id] = ""  # found by ``_where`` when the table is synced
                self.outbound[e.id] = deque()
        self.wake.set()

    async def leave(self) -> None:
        try:
            freed = await asyncio.wait_for(self.scripts["leave"](args=[self.node, self.token]), 1.0)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("could not leave the shared table (reaped after --node-ttl): %s", exc)
        else:
            log.info("left the shared table with %d clients", freed)

    # ---- background tasks -----------------------------------------------------------

    async def beat(self) -> None:
        """Keep this host alive in Redis, reap the hosts that are not, notice outages."""
        interval = self.node_ttl / 4
        while True:
            lane = self.lane  # appends unanswered for a while: made again on a new lane
            if lane is not None and lane.busy and time.monotonic() - lane.since > self.timeout:
                lane.abort(TimeoutError("appends unanswered"))
            try:
                # the rebuild window: every live host beats within it, and re-registers
                args: list[Any] = [self.node, self.token, self._alive_ms(), self._alive_ms(),
                                   secrets.token_hex(8)]  # fmt: skip
                reply = await _twice(partial(self.scripts["beat"], args=args), self.timeout)
            except _DOWN as exc:
                self._lost_redis(exc)
                if (not self.gave_up and self.down_since is not None
                        and time.monotonic() - self.down_since >= self.node_ttl):  # fmt: skip
                    self.gave_up = True
                    self.op("give up")
            except RedisError as exc:
                log.error("heartbeat refused: %s", exc)
            else:
                state, reaped = _text(reply[0]), int(reply[2])
                if reaped:
                    log.warning("reaped %d clients of hosts that stopped beating", reaped)
                if state == "JOIN" or self.down or self.dirty or _text(reply[1]) != self.epoch:
                    if state == "JOIN":
                        if self.epoch:
                            log.warning("this host is not registered in Redis (any more)")
                        self.joined.clear()  # nothing is decided here until SYNC is done
                    self.down_since = None
                    self._want_sync()
                elif self.held:
                    self.op("held")
                if any(self.outbound.values()):
                    self.op("resend")
                if self.fetched > (0, 0):  # what has been read is not needed any more
                    try:
                        await _twice(
                            lambda: self.redis.xtrim(
                                shared.stream(self.node),
                                minid=f"{self.fetched[0]}-{self.fetched[1]}",
                            ),
                            self.timeout,
                        )
                    except (*_DOWN, RedisError) as exc:
                        log.warning("trimming this host's stream: %s", exc)
            await asyncio.sleep(interval)

    async def read(self) -> None:
        """This host's stream into ``events``, in order: the one reader of the group.

        ``NOACK``: an entry counts as handled once read (see ``_event``), so none waits
        in Redis for an acknowledgement; the heartbeat trims what has been read. On a
        lane of its own (``resp.Lane``), its replies handled as they are parsed.
        """
        ask = resp.pack(
            "XREADGROUP", "GROUP", shared.GROUP, self.node, "COUNT", READ_COUNT,
            "BLOCK", READ_BLOCK_MS, "NOACK", "STREAMS", shared.stream(self.node), ">",
        )  # fmt: skip
        while True:
            await self.joined.wait()
            try:
                async with asyncio.timeout(self.timeout):
                    lane = await resp.connect(self.url)
            except _DOWN:  # the pump and the heartbeat judge outages; this only waits
                await asyncio.sleep(self.node_ttl / 4)
                continue
            try:
                await self._read_on(lane, ask)
            finally:
                lane.abort()

    async def _read_on(self, lane: resp.Lane, ask: bytes) -> None:
        """Read until the lane ends, stalls, or Redis refuses (it lost the group)."""
        refused = asyncio.get_running_loop().create_future()

        def got(replies: list[Any] | None) -> None:
            if replies is None:
                return  # the lane ended: ``closed`` says so
            reply = replies[0]
            if isinstance(reply, resp.ReplyError):  # NOGROUP: SYNC makes it again
                log.warning("reading %s: %s", shared.stream(self.node), reply)
                self._rejoin()
                if not refused.done():
                    refused.set_result(None)
                return
            lane.send(ask, 1, got)  # the next read first: Redis can fill it meanwhile
            if reply:
                self._fetched(reply[0][1])

        lane.send(ask, 1, got)
        stall = READ_BLOCK_MS / 1000 + self.timeout  # an empty reply is due every block
        while not refused.done() and not lane.broken:
            await asyncio.wait((refused, lane.closed), timeout=self.timeout)
            if lane.busy and time.monotonic() - lane.since > stall:
                log.warning("no reply from Redis in %gs: reading on a new connection", stall)
                return

    def _fetched(self, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            at = shared.stream_id(entry_id)
            self.fetched = max(self.fetched, at)
            self.events.append((at, entry_id, fields))
        if entries:
            self.arrived.set()
            if self.settling:
                self.wake.set()
            else:  # nothing under way: hand them on now, two loop turns sooner
                self._apply(None)
                self.flush()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _twice(call: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """``call()`` within ``timeout``, made once more if it fails for want of Redis: a
    timeout may only mean this process was stopped for a while (safe here: reads,
    appends the receiver dedups, heartbeats; decisions are made twice with an op id,
    in ``_call``). ``asyncio.timeout`` rather than redis-py's socket timeout, which
    wraps every read and write in a task of its own."""
    try:
        async with asyncio.timeout(timeout):
            return await call()
    except _DOWN:
        async with asyncio.timeout(timeout):
            return await call()


def connect_redis(url: str, timeout: float) -> aioredis.Redis:
    """A client that fails fast (no retries): an outage is handled above it, and so are
    timeouts (``_twice``)."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


async def serve(
    config: Any, links: list[Ends], control: socket.socket, orphaned: Callable[[], bool]
) -> None:
    loop = asyncio.get_running_loop()
    timeout = max(0.1, config.node_ttl / 4)
    client = connect_redis(config.redis, timeout)
    slots = range(len(links))
    inboxes = [Receiver(ends.inbox, m.from_wire) for ends in links]
    outboxes = [Sender(ends.outbox, loop, pack=m.to_wire) for ends in links]
    mm = ClusterMatchmaker(
        ClientTable(config.max_clients), outboxes, client, config.redis, config.node, config.token,
        config.node_ttl, config.migrate,
    )  # fmt: skip
    starting = Startup(mm, len(slots))
    stopped = loop.create_future()

    def readable(i: int) -> None:
        for batch in inboxes[i].drain():
            if starting.waiting:
                starting.take(i, batch)
            else:
                mm.handle(i, batch)
        if inboxes[i].closed:
            loop.remove_reader(inboxes[i].fileno())

    watched = [control.fileno()]
    control.setblocking(False)

    def relinked() -> None:
        for slot, ends in fresh_links(control, watched):
            loop.remove_reader(inboxes[slot].fileno())
            inboxes[slot].close()
            outboxes[slot].abandon()
            inboxes[slot] = Receiver(ends.inbox, m.from_wire)
            outboxes[slot] = Sender(ends.outbox, loop, pack=m.to_wire)
            loop.add_reader(inboxes[slot].fileno(), readable, slot)
            if starting.waiting:
                starting.forget(slot)
            else:
                mm.worker_gone(slot)
        if not watched:
            loop.remove_reader(control.fileno())

    for i in slots:
        loop.add_reader(inboxes[i].fileno(), readable, i)
    loop.add_reader(control.fileno(), relinked)

    async def watch_parent() -> None:
        mm.report(control, force=True)
        while not orphaned():
            await asyncio.sleep(1.0)
            mm.report(control)  # the counts for the metrics (ipc.counts)
        stopped.set_result(None)

    def terminate() -> None:
        if not stopped.done():
            stopped.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, terminate)
    tasks = [loop.create_task(c) for c in (mm.pump(), mm.beat(), mm.read(), watch_parent())]
    try:
        await stopped
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for i in slots:  # an EOF not yet read
            if not inboxes[i].closed:
                inboxes[i].drain()
        if all(inbox.closed for inbox in inboxes):
            # The host is shutting down (its workers are gone, and their clients with
            # them), not just this process: leave now rather than after --node-ttl.
            await mm.leave()
        await client.aclose()
        if mm.lane is not None:
            mm.lane.abort()


def main(spawn: Spawn) -> None:
    """Entry point of the matchmaker process of a host with ``--redis``.

    SIGTERM stops the loop (``serve`` handles it), so that a host shutting down
    can leave the shared table on its way out.
    """
    with booting(spawn.title):
        parent = child_setup(spawn.title, spawn.config.log_level, spawn.config.log_format)
        exit_on_sigterm()  # until the loop takes SIGTERM over
        assert spawn.control is not None

    def orphaned() -> bool:
        return os.getppid() != parent

    factory = None
    if spawn.config.loop == "uvloop":  # libuv, as the workers: less time in the loop itself
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(spawn.config, spawn.links, spawn.control, orphaned))
