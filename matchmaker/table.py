"""The id / FREE / BUSY table and every pairing rule, as plain data.

No I/O here: no queues, sockets or clocks. The matchmaker process owns one
``ClientTable`` and feeds it what the workers report; every method either
changes the table and returns what happened, or raises ``ProtocolError`` and
changes nothing (cf. h11's ``_state.py``: an illegal transition leaves the
state as it was).

Sessions get increasing ids that are never reused, so a line or a goodbye
that belongs to an old session can always be recognised and dropped, even
after both clients have paired again or their ids went to new clients.

Client ids are reused (the smallest free one is given out), so an id alone
cannot tell a ``CONNECT`` meant for the client that left from one meant for
the newcomer that took its id. Each client therefore holds its id *since* a
stamp, and each ``CONNECT`` says when it was *asked*: a holder newer than the
request is not the client it named, and the requester hears OFFLINE. The
stamps are opaque numbers here, compared and never read from a clock; the
caller makes them on one clock for every process involved (on one host, the
monotonic clock).

The line of ``MATCH`` is the table's too: the clients waiting for whoever asks
next, longest-waiting first. A client in it is FREE (a ``CONNECT`` pairs with
it, and takes it out of the line), never in it twice, and leaves it when it
is paired, cancels or leaves. Names are the table's as well, unique without
regard to case, freed with their holder.

``GET`` at 100,000 clients lists a megabyte. So that it need not be built from
every entry on each request, the ids are cut into blocks of ``block``, and
each block has a stamp that changes whenever a client in it comes, goes, or
changes what ``GET`` shows of it (``stamps``): a cached rendering of a block
(``matchmaker.listing``) is good while its stamp is.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from wire.commands import name_key
from wire.errors import ErrorCode, ProtocolError
from wire.replies import BUSY, FREE, WAITING, Listed

#: Default for ``--max-clients``: the 100,000 idle clients one host holds
#: (docs/PERFORMANCE.md, "100,000 idle clients": about 5 kB of memory each, over
#: every process). Each worker holds its clients' descriptors: the supervisor
#: raises the soft open-file limit to the hard one for every process, and warns
#: if that is short of a worker's share plus a margin (``Supervisor.raise_fd_limit``).
DEFAULT_MAX_CLIENTS = 100_000

#: Ids per block of the listing's stamps: a change re-renders 1,024 clients' items,
#: a GET at 100,000 joins about 100 blocks.
LISTING_BLOCK = 1024

A = TypeVar("A")  # where a client lives; the table only stores and returns it


@dataclass(slots=True)
class Entry(Generic[A]):
    """One connected client."""

    id: int
    addr: A
    peer: int | None = None
    session: int = 0  # 0 while FREE
    since: float = 0.0  # when it was given its id: a request asked before is not for it
    pinned: bool = False  # its socket cannot move to another worker
    name: str = ""  # as it asked for it ("" for none); unique without regard to case
    # the partner of its last session, as (id, since): whom ``MATCH NEW`` skips
    last_peer: tuple[int, float] | None = None
    last_session: int = 0  # the id of that session (a shared table rebuilt matches both ends)
    new: bool = False  # it waits, or last waited, with MATCH NEW


@dataclass(frozen=True, slots=True)
class Session(Generic[A]):
    """A session as it started or ended: its id and both ends."""

    id: int
    a: Entry[A]
    b: Entry[A]


class ClientTable(Generic[A]):
    """Who is connected, who is paired with whom, and which ids are free."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS, block: int = LISTING_BLOCK) -> None:
        self.max_clients = max_clients
        self.block = block
        #: per block of ``block`` ids, the version of the table at its last change
        self.stamps: list[int] = []
        self._version = 0
        self._busy: set[int] = set()  # every client in a session, and maybe some that left it
        self._entries: dict[int, Entry[A]] = {}
        self._freed: list[int] = []  # heap of ids below _next_id that are free
        self._next_id = 1
        self._next_session = 1
        # the line of MATCH, longest-waiting first: id -> whether it asked MATCH NEW
        self._line: dict[int, bool] = {}
        self._names: dict[str, int] = {}  # name_key(name) -> its holder

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: object) -> bool:
        return cid in self._entries

    def get(self, cid: int) -> Entry[A] | None:
        return self._entries.get(cid)

    def entries(self) -> list[Entry[A]]:
        return list(self._entries.values())

    def busy(self) -> list[Entry[A]]:
        """Every client in a session (its partner here or on another host), without
        looking at the others: the metrics count sessions four times a second."""
        entries, busy = self._entries, self._busy
        out = []
        for cid in list(busy):
            e = entries.get(cid)
            if e is None or not e.session:
                busy.discard(cid)  # its session ended outside the table (another host's)
            else:
                out.append(e)
        return out

    def mark_busy(self, cid: int) -> None:
        """``cid`` is in a session the table did not start (one with another host's client)."""
        self._busy.add(cid)
        self.touch(cid)

    def touch(self, cid: int) -> None:
        """What ``GET`` shows of ``cid`` changed: its block's cached rendering is stale."""
        block = cid // self.block
        stamps = self.stamps
        if block >= len(stamps):
            stamps.extend([0] * (block + 1 - len(stamps)))
        self._version += 1
        stamps[block] = self._version

    def clients_between(self, lo: int, hi: int, free_only: bool = False) -> list[Listed]:
        """``clients`` of the ids ``lo <= id < hi`` only (one block of the listing)."""
        entries, line = self._entries, self._line
        listed = []
        for cid in range(lo, hi):
            e = entries.get(cid)
            if e is None:
                continue
            status = BUSY if e.session else WAITING if cid in line else FREE
            if status == FREE or not free_only:
                listed.append((cid, status, e.name))
        return listed

    def restore(
        self,
        entries: list[Entry[A]],
        last_session: int,
        line: list[tuple[int, bool]] | None = None,
    ) -> list[Entry[A]]:
        """Start over from what the workers report (a fresh matchmaker after a crash).

        Sessions started from now on get ids above ``last_session``, the highest
        any worker still knows, so no late message can be taken for a new session.
        ``line`` is who waits for ``MATCH`` (with its ``NEW``), longest-waiting
        first; a client in a session is left out. Names come with the entries;
        of two that clash, the lower id keeps it: the others lose theirs and are
        returned.
        """
        self._entries = {e.id: e for e in entries}
        self._line = {cid: new for cid, new in line or () if self._free(cid)}
        self._names = {}
        clashed = []
        for e in sorted(entries, key=lambda e: e.id):
            if e.name and self._names.setdefault(name_key(e.name), e.id) != e.id:
                e.name = ""
                clashed.append(e)
        self._next_id = max(self._entries, default=0) + 1
        self._freed = [i for i in range(1, self._next_id) if i not in self._entries]
        heapq.heapify(self._freed)
        self._next_session = last_session + 1
        self._busy = {e.id for e in entries if e.session}
        self._version += 1
        self.stamps = [self._version] * (self._next_id // self.block + 1)
        return clashed

    def register(self, addr: A, since: float = 0.0) -> Entry[A]:
        """Give a new client the smallest free id, from ``since`` on; FULL at ``max_clients``."""
        if len(self._entries) >= self.max_clients:
            raise ProtocolError(ErrorCode.FULL)
        if self._freed:
            cid = heapq.heappop(self._freed)
        else:
            cid = self._next_id
            self._next_id += 1
        entry = Entry(cid, addr, since=since)
        self._entries[cid] = entry
        self.touch(cid)
        return entry

    def admit(self, cid: int, addr: A, since: float = 0.0) -> Entry[A]:
        """Take back a client that keeps the id it had (one the table lost track of).

        FREE, and only if ``cid`` is free; else ``ProtocolError`` (FULL if the
        table is full, OFFLINE if someone else holds the id now). ``since`` is
        when it was first given the id: it is the same client as before.
        """
        if cid in self._entries or cid < 1:
            raise ProtocolError(ErrorCode.OFFLINE, str(cid))
        if len(self._entries) >= self.max_clients:
            raise ProtocolError(ErrorCode.FULL)
        if cid >= self._next_id:
            for free in range(self._next_id, cid):
                heapq.heappush(self._freed, free)
            self._next_id = cid + 1
        else:
            self._freed.remove(cid)
            heapq.heapify(self._freed)
        entry = Entry(cid, addr, since=since)
        self._entries[cid] = entry
        self.touch(cid)
        return entry

    def clients(self, free_only: bool = False) -> list[Listed]:
        """``(id, status, name)`` for every client (or every FREE one), ascending id.

        FREE only leaves out the clients waiting in the line too.
        """
        entries, line = self._entries, self._line
        listed = []
        for cid in sorted(entries):
            e = entries[cid]
            status = BUSY if e.session else WAITING if cid in line else FREE
            if status == FREE or not free_only:
                listed.append((cid, status, e.name))
        return listed

    def _free(self, cid: int) -> bool:
        entry = self._entries.get(cid)
        return entry is not None and not entry.session

    # ---- the line of MATCH ------------------------------------------------------------

    def line(self) -> list[int]:
        """The clients waiting for ``MATCH``, longest-waiting first."""
        return list(self._line)

    def waiting(self, cid: int) -> bool:
        return cid in self._line

    def asked_new(self, cid: int) -> bool:
        """Whether ``cid`` waits with ``MATCH NEW``."""
        return self._line.get(cid, False)

    def match(self, cid: int, new: bool = False) -> Session[A] | None:
        """Pair ``cid`` with the client that has waited longest, or put it in the line (None).

        ``new`` skips the partner of its last session; one waiting with ``new`` is
        skipped by the partner of its own. TALKING if it is in a session (a pairing
        crossed its request), WAITING if it is in the line already.
        """
        me = self._entries[cid]
        if me.session:
            raise ProtocolError(ErrorCode.TALKING, str(me.peer))
        if cid in self._line:
            raise ProtocolError(ErrorCode.WAITING)
        for other_id, other_new in self._line.items():
            other = self._entries[other_id]
            if new and me.last_peer == (other.id, other.since):
                continue
            if other_new and other.last_peer == (me.id, me.since):
                continue
            del self._line[other_id]
            return self._pair_new(me, other)
        self._line[cid] = me.new = new
        self.touch(cid)
        return None

    def requeue(self, cid: int) -> bool:
        """Put ``cid`` back at the head of the line: the pairing that took it out was
        called off before it started (its partner left while one of them moved), and
        it never heard of it. Only a FREE client not in the line; whether it went back.
        """
        me = self._entries.get(cid)
        if me is None or me.session or cid in self._line:
            return False
        self._line = {cid: me.new, **self._line}
        self.touch(cid)
        return True

    def wait(self, cid: int, new: bool = False) -> None:
        """Put ``cid`` at the end of the line: the table shared by several hosts decided so."""
        self._line[cid] = self._entries[cid].new = new
        self.touch(cid)

    def unwait(self, cid: int) -> None:
        """Take ``cid`` out of the line, if it is in it (decided elsewhere)."""
        if self._line.pop(cid, None) is not None:
            self.touch(cid)

    def cancel(self, cid: int) -> None:
        """Take ``cid`` out of the line; TALKING if it is paired, NOT_WAITING if not in it."""
        me = self._entries[cid]
        if me.session:
            raise ProtocolError(ErrorCode.TALKING, str(me.peer))
        if self._line.pop(cid, None) is None:
            raise ProtocolError(ErrorCode.NOT_WAITING)
        self.touch(cid)

    # ---- names -------------------------------------------------------------------------

    def name(self, cid: int, name: str) -> None:
        """Give ``cid`` the name (a valid one: ``wire.commands.valid_name``), or drop its
        own with ``""``; NAME_TAKEN if another client holds it in any case."""
        me = self._entries[cid]
        key = name_key(name)
        holder = self._names.get(key) if name else None
        if holder is not None and holder != cid:
            raise ProtocolError(ErrorCode.NAME_TAKEN, name)
        if me.name:
            del self._names[name_key(me.name)]
        me.name = name
        if name:
            self._names[key] = cid
        self.touch(cid)

    def named(self, name: str) -> int | None:
        """Who holds ``name`` (in any case), if anyone."""
        return self._names.get(name_key(name))

    def connect(self, requester: int, target: int, asked: float = math.inf) -> Session[A]:
        """Pair two FREE clients, or raise the error the requester gets.

        ``asked`` is when the request was made (by default, no matter when): a
        client given the id ``target`` after that is not the one it named, so
        the target is OFFLINE, as it was when the request was made.
        """
        me = self._entries[requester]
        if me.session:
            # Someone paired with us while this CONNECT was in flight.
            raise ProtocolError(ErrorCode.TALKING, str(me.peer))
        if target == requester:
            raise ProtocolError(ErrorCode.SELF)
        other = self._entries.get(target)
        if other is None or other.since > asked:
            raise ProtocolError(ErrorCode.OFFLINE, str(target))
        if other.session:
            raise ProtocolError(ErrorCode.BUSY, str(target))
        return self._pair_new(me, other)

    def _pair_new(self, me: Entry[A], other: Entry[A]) -> Session[A]:
        """Pair two FREE clients in a new session; neither waits in the line any more."""
        sid = self._next_session
        self._next_session += 1
        me.peer, me.session = other.id, sid
        other.peer, other.session = me.id, sid
        self._line.pop(me.id, None)
        self._line.pop(other.id, None)
        self._started(me.id, other.id)
        return Session(sid, me, other)

    def _started(self, a: int, b: int) -> None:
        self._busy.add(a)
        self._busy.add(b)
        self.touch(a)
        self.touch(b)

    def pair(self, requester: int, target: int, session: int) -> Session[A]:
        """Record a session decided elsewhere (the table shared by several hosts)."""
        me, other = self._entries[requester], self._entries[target]
        self._line.pop(requester, None)
        self._line.pop(target, None)
        me.peer, me.session = target, session
        other.peer, other.session = requester, session
        self._next_session = max(self._next_session, session + 1)
        self._started(requester, target)
        return Session(session, me, other)

    def partner(self, cid: int, session: int) -> Entry[A] | None:
        """The other end of ``session`` if ``cid`` is still in it, else None."""
        me = self._entries.get(cid)
        if me is None or me.session != session or me.peer is None:
            return None
        return self._entries.get(me.peer)  # None for a partner on another host

    def goodbye(self, cid: int, session: int) -> Session[A] | None:
        """End ``session`` for both ends; None if it is already over (a stale goodbye)."""
        other = self.partner(cid, session)
        if other is None:
            return None
        me = self._entries[cid]
        me.peer = other.peer = None
        me.session = other.session = 0
        me.last_peer, other.last_peer = (other.id, other.since), (me.id, me.since)
        me.last_session = other.last_session = session
        self._busy.discard(me.id)
        self._busy.discard(other.id)
        self.touch(me.id)
        self.touch(other.id)
        return Session(session, me, other)

    def drop(self, cid: int) -> tuple[Entry[A], Session[A] | None] | None:
        """Forget a client and free its id; also the session it ends, if any."""
        me = self._entries.get(cid)
        if me is None:
            return None
        ended = self.goodbye(cid, me.session) if me.session else None
        del self._entries[cid]
        self._line.pop(cid, None)
        if me.name:
            del self._names[name_key(me.name)]
        heapq.heappush(self._freed, cid)
        self._busy.discard(cid)
        self.touch(cid)
        return me, ended
