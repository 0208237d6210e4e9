"""matchmaker.table: a hypothesis state machine against a plain model.

The model keeps, per id, the peer and session the table should hold and
when the id was given (on a clock that ticks once per rule), plus every
session id ever given out, the line of MATCH, the names and each client's
last partner. Each rule predicts the outcome from the model alone and checks
the table against it; a refused move must leave the table exactly as it was.
After every rule, GET's answer as the matchmaker keeps it rendered block by
block (``matchmaker.listing``, blocks of two ids here) must be the line built
from every entry.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from matchmaker.listing import Rendered
from matchmaker.table import ClientTable
from wire.errors import ProtocolError
from wire.replies import BUSY, FREE, WAITING, clients_line

MAX_CLIENTS = 6
#: ids per block of the rendered listing: several blocks, some of them empty
BLOCK = 2

#: a few names that clash in case, so NAME_TAKEN comes up often
NAMES = ["", "ann", "Ann", "bo", "BO", "cy"]


def snapshot(table):
    return (
        len(table),
        table.clients(),
        table.clients(free_only=True),
        table.line(),
        sorted(
            (e.id, e.addr, e.peer, e.session, e.since, e.name, e.last_peer) for e in table.entries()
        ),
    )


class TableMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.table = ClientTable(MAX_CLIENTS, BLOCK)
        self.rendered = Rendered(self.table)
        self.model = {}  # id -> [addr, peer, session, since]
        self.sessions = []  # every session id given out, in order
        self.addrs = itertools.count()
        self.now = 0.0  # the clock that stamps ids and requests
        self.line = {}  # id -> asked MATCH NEW, longest-waiting first
        self.names = {}  # id -> name
        self.last = {}  # id -> (id, since) of the partner of its last session

    def tick(self):
        self.now += 1.0
        return self.now

    def smallest_free(self):
        return next(i for i in itertools.count(1) if i not in self.model)

    def expect_refused(self, call, *args):
        before = snapshot(self.table)
        try:
            call(*args)
        except ProtocolError as error:
            assert snapshot(self.table) == before
            return error.line()
        raise AssertionError(f"{call.__name__}{args} was not refused")

    def any_session(self, data):
        """A session id that is current, stale, never given out, or 0."""
        return data.draw(st.sampled_from([0, *self.sessions, len(self.sessions) + 1]))

    def any_moment(self, data):
        """When a request was asked: before some ids were given, now, or unstamped."""
        return data.draw(st.sampled_from([0.0, self.now / 2, self.now, math.inf]), label="asked")

    # ---- rules --------------------------------------------------------------

    @rule()
    def register(self):
        addr, since = next(self.addrs), self.tick()
        if len(self.model) >= MAX_CLIENTS:
            assert self.expect_refused(self.table.register, addr, since) == "ERROR FULL"
            return
        expected = self.smallest_free()
        entry = self.table.register(addr, since)
        assert (entry.id, entry.addr, entry.peer, entry.session) == (expected, addr, None, 0)
        assert entry.since == since
        self.model[expected] = [addr, None, 0, since]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def connect(self, data):
        requester = data.draw(st.sampled_from(sorted(self.model)), label="requester")
        target = data.draw(st.integers(0, MAX_CLIENTS + 2), label="target")
        asked = self.any_moment(data)
        _, peer, session, _ = self.model[requester]
        if session:
            error = f"ERROR TALKING {peer}"
        elif target == requester:
            error = "ERROR SELF"
        elif target not in self.model or self.model[target][3] > asked:
            error = f"ERROR OFFLINE {target}"  # nobody, or a newcomer the request was not for
        elif self.model[target][2]:
            error = f"ERROR BUSY {target}"
        else:
            error = None
        if error is not None:
            assert self.expect_refused(self.table.connect, requester, target, asked) == error
            return
        result = self.table.connect(requester, target, asked)
        assert (result.a.id, result.b.id) == (requester, target)
        self.started(result, requester, target)

    def started(self, result, a, b):
        assert all(result.id > old for old in self.sessions)
        self.sessions.append(result.id)
        self.model[a][1:3] = [b, result.id]
        self.model[b][1:3] = [a, result.id]
        self.line.pop(a, None)
        self.line.pop(b, None)

    def ended(self, a, b):
        self.model[a][1:3] = [None, 0]
        self.model[b][1:3] = [None, 0]
        self.last[a] = (b, self.model[b][3])
        self.last[b] = (a, self.model[a][3])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def match(self, data):
        cid = data.draw(st.sampled_from(sorted(self.model)), label="cid")
        new = data.draw(st.booleans(), label="new")
        _, peer, session, since = self.model[cid]
        if session:
            assert self.expect_refused(self.table.match, cid, new) == f"ERROR TALKING {peer}"
            return
        if cid in self.line:
            assert self.expect_refused(self.table.match, cid, new) == "ERROR WAITING"
            return
        me = (cid, since)
        partner = next(
            (
                w
                for w, w_new in self.line.items()
                if not (new and self.last.get(cid) == (w, self.model[w][3]))
                and not (w_new and self.last.get(w) == me)
            ),
            None,
        )
        result = self.table.match(cid, new)
        if partner is None:
            assert result is None
            self.line[cid] = new
            return
        assert result is not None and (result.a.id, result.b.id) == (cid, partner)
        self.started(result, cid, partner)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data):
        cid = data.draw(st.sampled_from(sorted(self.model)), label="cid")
        _, peer, session, _ = self.model[cid]
        if session:
            assert self.expect_refused(self.table.cancel, cid) == f"ERROR TALKING {peer}"
        elif cid not in self.line:
            assert self.expect_refused(self.table.cancel, cid) == "ERROR NOT_WAITING"
        else:
            self.table.cancel(cid)
            del self.line[cid]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def name(self, data):
        cid = data.draw(st.sampled_from(sorted(self.model)), label="cid")
        name = data.draw(st.sampled_from(NAMES), label="name")
        holder = next((c for c, n in self.names.items() if n.lower() == name.lower()), None)
        if name and holder not in (None, cid):
            assert self.expect_refused(self.table.name, cid, name) == f"ERROR NAME_TAKEN {name}"
            return
        self.table.name(cid, name)
        self.names.pop(cid, None)
        if name:
            self.names[cid] = name

    @rule(data=st.data())
    def named(self, data):
        name = data.draw(st.sampled_from(NAMES[1:]), label="name")
        holder = next((c for c, n in self.names.items() if n.lower() == name.lower()), None)
        assert self.table.named(name) == holder

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def goodbye(self, data):
        cid = data.draw(st.sampled_from([*sorted(self.model), MAX_CLIENTS + 1]), label="cid")
        if cid in self.model and self.model[cid][2] and data.draw(st.booleans(), label="current"):
            session = self.model[cid][2]
        else:
            session = self.any_session(data)
        current = cid in self.model and self.model[cid][2] == session != 0
        if not current:
            before = snapshot(self.table)
            assert self.table.goodbye(cid, session) is None
            assert snapshot(self.table) == before
            return
        peer = self.model[cid][1]
        ended = self.table.goodbye(cid, session)
        assert ended is not None
        assert (ended.id, ended.a.id, ended.b.id) == (session, cid, peer)
        self.ended(cid, peer)

    @rule(data=st.data())
    def partner(self, data):
        cid = data.draw(st.integers(0, MAX_CLIENTS + 1), label="cid")
        session = self.any_session(data)
        found = self.table.partner(cid, session)
        if cid in self.model and self.model[cid][2] == session != 0:
            assert found is not None and found.id == self.model[cid][1]
        else:
            assert found is None

    @rule(data=st.data())
    def drop(self, data):
        cid = data.draw(st.integers(0, MAX_CLIENTS + 1), label="cid")
        if cid not in self.model:
            before = snapshot(self.table)
            assert self.table.drop(cid) is None
            assert snapshot(self.table) == before
            return
        addr, peer, session, _ = self.model[cid]
        entry, ended = self.table.drop(cid)
        assert (entry.id, entry.addr) == (cid, addr)
        if session:
            assert ended is not None
            assert (ended.id, ended.a.id, ended.b.id) == (session, cid, peer)
            self.ended(cid, peer)
        else:
            assert ended is None
        del self.model[cid]
        self.line.pop(cid, None)
        self.names.pop(cid, None)
        self.last.pop(cid, None)

    @rule(data=st.data())
    def admit(self, data):
        """A client the table lost track of asks for its id back (any id, taken or not).

        It keeps when it was first given the id, which may be any moment so far.
        """
        cid = data.draw(st.integers(0, MAX_CLIENTS + 3), label="cid")
        addr = next(self.addrs)
        since = data.draw(st.sampled_from([0.0, self.now]), label="since")
        if cid < 1 or cid in self.model:
            refusal = self.expect_refused(self.table.admit, cid, addr, since)
            assert refusal == f"ERROR OFFLINE {cid}"
            return
        if len(self.model) >= MAX_CLIENTS:
            assert self.expect_refused(self.table.admit, cid, addr, since) == "ERROR FULL"
            return
        entry = self.table.admit(cid, addr, since)
        assert (entry.id, entry.addr, entry.peer, entry.session) == (cid, addr, None, 0)
        assert entry.since == since
        self.model[cid] = [addr, None, 0, since]

    @rule(in_place=st.booleans())
    def restore(self, in_place):
        """A new matchmaker rebuilds the table from what the workers say: entries with
        their names, and the line in the order it had. In place, as the matchmaker
        does, the rendered listing must not keep a block from before."""
        entries = self.table.entries()
        line = [(cid, self.table.asked_new(cid)) for cid in self.table.line()]
        top = max(self.sessions, default=0)
        before = snapshot(self.table)
        table = self.table if in_place else ClientTable(MAX_CLIENTS, BLOCK)
        assert table.restore(entries, top, line) == []  # no names clash
        if not in_place:
            self.table, self.rendered = table, Rendered(table)
        assert snapshot(self.table) == before

    # ---- invariants -----------------------------------------------------------

    @invariant()
    def matches_the_model(self):
        got = {e.id: [e.addr, e.peer, e.session, e.since] for e in self.table.entries()}
        assert got == self.model
        assert len(self.table.entries()) == len(self.table) == len(self.model)

    @invariant()
    def pairs_are_symmetric_one_session_each(self):
        sessions = {}
        for entry in self.table.entries():
            if entry.peer is None:
                assert entry.session == 0  # FREE: no peer, no session
                continue
            other = self.table.get(entry.peer)
            assert other is not None and other is not entry
            assert other.peer == entry.id
            assert other.session == entry.session != 0
            sessions.setdefault(entry.session, set()).add(entry.id)
        for members in sessions.values():
            assert len(members) == 2  # a session has exactly two ends

    @invariant()
    def free_entries_have_no_session(self):
        for entry in self.table.entries():
            if entry.session == 0:
                assert entry.peer is None

    @invariant()
    def bounded_and_ascending(self):
        assert len(self.table) <= MAX_CLIENTS
        listed = self.table.clients()
        ids = [cid for cid, _, _ in listed]
        assert ids == sorted(set(ids))

        def status(cid):
            return BUSY if self.model[cid][2] else WAITING if cid in self.line else FREE

        assert listed == [(c, status(c), self.names.get(c, "")) for c in sorted(self.model)]
        free = [entry for entry in listed if entry[1] == FREE]
        assert self.table.clients(free_only=True) == free

    @invariant()
    def the_line_holds_free_clients_once_in_order(self):
        assert self.table.line() == list(self.line)
        for cid in self.line:
            assert self.model[cid][2] == 0  # never someone in a session
            assert self.table.waiting(cid)

    @invariant()
    def names_are_unique_without_regard_to_case(self):
        names = [e.name.lower() for e in self.table.entries() if e.name]
        assert len(names) == len(set(names))

    @invariant()
    def last_partners_are_remembered(self):
        for entry in self.table.entries():
            assert entry.last_peer == self.last.get(entry.id)

    @invariant()
    def the_rendered_listing_is_the_plain_one(self):
        for free_only in (False, True):
            assert self.rendered.line(free_only) == clients_line(self.table.clients(free_only))

    @invariant()
    def busy_lists_every_client_in_a_session(self):
        busy = sorted(e.id for e in self.table.busy())
        assert busy == sorted(cid for cid, (_, _, session, _) in self.model.items() if session)

    @invariant()
    def session_ids_strictly_increase(self):
        assert self.sessions == sorted(set(self.sessions))


TableMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_table_machine = TableMachine.TestCase
