"""matchmaker.table: a hypothesis state machine against a plain model.

The model keeps, per id, the peer and session the table should hold and
when the id was given (on a clock that ticks once per rule), plus every
session id ever given out. Each rule predicts the outcome from the model
alone and checks the table against it; a refused move must leave the table
exactly as it was.
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

from matchmaker.table import ClientTable
from wire.errors import ProtocolError

MAX_CLIENTS = 6


def snapshot(table):
    return (
        len(table),
        table.clients(),
        table.clients(free_only=True),
        sorted((e.id, e.addr, e.peer, e.session, e.since) for e in table.entries()),
    )


class TableMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.table = ClientTable(MAX_CLIENTS)
        self.model = {}  # id -> [addr, peer, session, since]
        self.sessions = []  # every session id given out, in order
        self.addrs = itertools.count()
        self.now = 0.0  # the clock that stamps ids and requests

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
        assert all(result.id > old for old in self.sessions)
        self.sessions.append(result.id)
        self.model[requester][1:3] = [target, result.id]
        self.model[target][1:3] = [requester, result.id]

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
        self.model[cid][1:3] = [None, 0]
        self.model[peer][1:3] = [None, 0]

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
        addr, peer, session, _ = self.model.pop(cid)
        entry, ended = self.table.drop(cid)
        assert (entry.id, entry.addr) == (cid, addr)
        if session:
            assert ended is not None
            assert (ended.id, ended.a.id, ended.b.id) == (session, cid, peer)
            self.model[peer][1:3] = [None, 0]
        else:
            assert ended is None

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
        ids = [cid for cid, _ in listed]
        assert ids == sorted(set(ids))
        assert listed == [(cid, bool(self.model[cid][2])) for cid in sorted(self.model)]
        assert self.table.clients(free_only=True) == [(c, False) for c, busy in listed if not busy]

    @invariant()
    def session_ids_strictly_increase(self):
        assert self.sessions == sorted(set(self.sessions))


TableMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_table_machine = TableMachine.TestCase
