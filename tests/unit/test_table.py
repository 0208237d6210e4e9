"""matchmaker.table: every transition of ClientTable as plain calls.

As in h11's ``test_state.py``: an illegal move raises and nothing happens, so
each refused call is checked against a snapshot taken before it.
"""

from __future__ import annotations

import pytest

from matchmaker.table import DEFAULT_MAX_CLIENTS, ClientTable, Entry
from wire.errors import ErrorCode, ProtocolError
from wire.replies import BUSY, FREE, WAITING


def snapshot(table):
    """Everything observable about the table, as plain values."""
    return (
        len(table),
        table.clients(),
        table.clients(free_only=True),
        table.line(),
        sorted((e.id, e.addr, e.peer, e.session, e.name, e.last_peer) for e in table.entries()),
    )


def filled(n, max_clients=DEFAULT_MAX_CLIENTS):
    table = ClientTable(max_clients)
    for i in range(n):
        table.register(f"addr{i + 1}")
    return table


def refused(table, call, *args):
    before = snapshot(table)
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert snapshot(table) == before
    return info.value.line()


# ---- ids ---------------------------------------------------------------------------


def test_register_gives_ids_from_one_with_the_address():
    table = ClientTable()
    first = table.register(("w0", 5))
    assert first == Entry(1, ("w0", 5), None, 0)
    assert table.register("x").id == 2
    assert table.register("y").id == 3
    assert len(table) == 3
    assert 1 in table and 3 in table and 4 not in table and "1" not in table
    assert table.get(1) is first
    assert table.get(4) is None
    assert table.clients() == [(1, FREE, ""), (2, FREE, ""), (3, FREE, "")]


def test_smallest_free_id_is_reused_like_file_descriptors():
    table = filled(3)
    table.drop(2)
    assert table.register("b").id == 2
    table.drop(1)
    table.drop(3)
    assert table.clients() == [(2, FREE, "")]
    assert table.register("c").id == 1
    assert table.register("d").id == 3
    assert table.register("e").id == 4


def test_freed_ids_come_back_in_ascending_order():
    table = filled(6)
    for cid in (5, 2, 6, 4):
        table.drop(cid)
    assert [table.register("n").id for _ in range(5)] == [2, 4, 5, 6, 7]


def test_all_dropped_starts_again_at_one():
    table = filled(4)
    for cid in (4, 3, 2, 1):
        table.drop(cid)
    assert len(table) == 0
    assert table.clients() == []
    assert table.register("again").id == 1


def test_full_at_max_clients_changes_nothing():
    table = filled(3, max_clients=3)
    assert refused(table, table.register, "late") == "ERROR FULL"
    with pytest.raises(ProtocolError) as info:
        table.register("late")
    assert info.value.code is ErrorCode.FULL
    assert info.value.detail == ""
    table.drop(2)
    assert table.register("now").id == 2  # FULL did not burn an id
    assert refused(table, table.register, "late") == "ERROR FULL"


def test_max_clients_one():
    table = ClientTable(1)
    assert table.register("a").id == 1
    assert refused(table, table.register, "b") == "ERROR FULL"


def test_default_max_clients():
    """What one host holds (docs/PERFORMANCE.md, "100,000 idle clients")."""
    assert DEFAULT_MAX_CLIENTS == 100_000
    assert ClientTable().max_clients == 100_000


# ---- connect ---------------------------------------------------------------------


def test_connect_pairs_two_free_clients():
    table = filled(3)
    session = table.connect(1, 3)
    assert session.id == 1
    assert (session.a.id, session.b.id) == (1, 3)  # a is the requester
    assert session.a is table.get(1) and session.b is table.get(3)
    assert (table.get(1).peer, table.get(1).session) == (3, 1)
    assert (table.get(3).peer, table.get(3).session) == (1, 1)
    assert table.clients() == [(1, BUSY, ""), (2, FREE, ""), (3, BUSY, "")]
    assert table.clients(free_only=True) == [(2, FREE, "")]


def test_connect_self():
    table = filled(2)
    assert refused(table, table.connect, 1, 1) == "ERROR SELF"


def test_connect_offline():
    table = filled(2)
    assert refused(table, table.connect, 1, 9) == "ERROR OFFLINE 9"
    table.drop(2)
    assert refused(table, table.connect, 1, 2) == "ERROR OFFLINE 2"


def test_connect_busy_target():
    table = filled(3)
    table.connect(1, 2)
    assert refused(table, table.connect, 3, 1) == "ERROR BUSY 1"
    assert refused(table, table.connect, 3, 2) == "ERROR BUSY 2"


def test_crossed_connect_gives_talking():
    """A->B then B->A: the second finds its requester already paired."""
    table = filled(2)
    table.connect(1, 2)
    assert refused(table, table.connect, 2, 1) == "ERROR TALKING 1"
    assert refused(table, table.connect, 1, 2) == "ERROR TALKING 2"


def test_talking_is_checked_before_the_target():
    table = filled(4)
    table.connect(1, 2)
    assert refused(table, table.connect, 1, 1) == "ERROR TALKING 2"
    assert refused(table, table.connect, 1, 9) == "ERROR TALKING 2"
    assert refused(table, table.connect, 1, 3) == "ERROR TALKING 2"
    table.connect(3, 4)
    assert refused(table, table.connect, 2, 3) == "ERROR TALKING 1"


def test_two_requesters_for_one_target_only_the_first_pairs():
    """A->C and B->C: exactly one pairs; the other gets BUSY."""
    table = filled(3)
    table.connect(1, 3)
    assert refused(table, table.connect, 2, 3) == "ERROR BUSY 3"
    assert table.clients(free_only=True) == [(2, FREE, "")]


def test_session_ids_increase_and_are_never_reused():
    table = filled(4)
    seen = []
    for _ in range(3):
        s1 = table.connect(1, 2)
        s2 = table.connect(4, 3)
        seen += [s1.id, s2.id]
        table.goodbye(1, s1.id)
        table.drop(3)
        table.register("again")
        table.goodbye(4, s2.id)  # already ended by the drop
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


def test_refused_connect_does_not_use_a_session_id():
    table = filled(3)
    first = table.connect(1, 2)
    with pytest.raises(ProtocolError):
        table.connect(3, 1)
    table.goodbye(1, first.id)
    assert table.connect(3, 1).id == first.id + 1


# ---- connect: ids are reused, so a request is for the holder it was asked of ----------


def test_a_holder_newer_than_the_request_is_offline_and_nothing_changes():
    """A asks for 2 at time 5; 2 leaves and a newcomer takes id 2 at time 6."""
    table = ClientTable()
    table.register("a", since=1.0)
    table.register("old 2", since=2.0)
    table.drop(2)
    assert table.register("newcomer", since=6.0).id == 2
    assert refused(table, table.connect, 1, 2, 5.0) == "ERROR OFFLINE 2"
    assert table.connect(1, 2, 6.5).b.addr == "newcomer"  # asked after it got the id


def test_a_holder_older_than_the_request_pairs():
    table = ClientTable()
    table.register("a", since=5.0)
    table.register("b", since=5.0)
    assert table.connect(1, 2, 5.0).id == 1  # the same moment is not newer
    assert table.get(2).since == 5.0


def test_a_request_without_a_stamp_takes_any_holder():
    table = ClientTable()
    table.register("a", since=1.0)
    table.register("b", since=1e9)
    assert table.connect(1, 2).b.id == 2


def test_the_stamp_is_checked_after_talking_and_self_and_before_busy():
    table = ClientTable()
    for name in "abcd":
        table.register(name, since=10.0)
    table.connect(1, 2, 11.0)
    assert refused(table, table.connect, 1, 3, 0.0) == "ERROR TALKING 2"
    assert refused(table, table.connect, 3, 3, 0.0) == "ERROR SELF"
    assert refused(table, table.connect, 3, 1, 0.0) == "ERROR OFFLINE 1"  # not BUSY: not asked of
    assert refused(table, table.connect, 3, 1, 11.0) == "ERROR BUSY 1"


def test_a_client_taken_back_keeps_when_it_got_its_id():
    table = ClientTable()
    table.register("a", since=1.0)
    assert table.admit(2, "moved", since=3.0).since == 3.0
    assert table.connect(1, 2, 4.0).b.addr == "moved"
    assert table.admit(5, "x").since == 0.0


def test_restore_keeps_each_clients_stamp():
    table = ClientTable()
    table.restore([Entry(1, "a", since=1.0), Entry(3, "c", since=7.0)], last_session=4)
    assert refused(table, table.connect, 1, 3, 6.0) == "ERROR OFFLINE 3"
    assert table.connect(1, 3, 7.5).id == 5
    assert table.register("b", since=9.0) == Entry(2, "b", since=9.0)


# ---- partner ----------------------------------------------------------------------


def test_partner_current_and_stale_sessions():
    table = filled(3)
    session = table.connect(1, 2)
    assert table.partner(1, session.id) is table.get(2)
    assert table.partner(2, session.id) is table.get(1)
    assert table.partner(1, session.id + 1) is None
    assert table.partner(1, 0) is None
    assert table.partner(3, session.id) is None
    assert table.partner(3, 0) is None  # FREE client, no session
    assert table.partner(9, session.id) is None  # unknown client
    table.goodbye(1, session.id)
    assert table.partner(1, session.id) is None
    assert table.partner(2, session.id) is None
    later = table.connect(2, 1)
    assert table.partner(1, session.id) is None
    assert table.partner(1, later.id) is table.get(2)


# ---- goodbye ----------------------------------------------------------------------


@pytest.mark.parametrize("leaver", [1, 2])
def test_goodbye_frees_both_ends(leaver):
    table = filled(3)
    session = table.connect(1, 2)
    ended = table.goodbye(leaver, session.id)
    assert ended is not None
    assert ended.id == session.id
    assert ended.a.id == leaver  # a is the end that said goodbye
    assert ended.b.id == 3 - leaver
    for cid in (1, 2):
        assert (table.get(cid).peer, table.get(cid).session) == (None, 0)
    assert table.clients() == [(1, FREE, ""), (2, FREE, ""), (3, FREE, "")]
    assert table.connect(2, 1).id == session.id + 1  # both can pair again


def test_stale_goodbye_returns_none_and_changes_nothing():
    table = filled(4)
    old = table.connect(1, 2)
    table.goodbye(2, old.id)
    new = table.connect(1, 3)
    table.connect(2, 4)
    before = snapshot(table)
    assert table.goodbye(1, old.id) is None
    assert table.goodbye(2, old.id) is None
    assert table.goodbye(2, new.id) is None  # someone else's session
    assert table.goodbye(1, 0) is None
    assert table.goodbye(9, new.id) is None
    assert snapshot(table) == before
    assert table.goodbye(3, new.id).b.id == 1


def test_goodbye_while_free_returns_none():
    table = filled(2)
    before = snapshot(table)
    assert table.goodbye(1, 0) is None
    assert table.goodbye(1, 1) is None
    assert snapshot(table) == before


# ---- drop -------------------------------------------------------------------------


def test_drop_free_client():
    table = filled(3)
    entry = table.get(2)
    assert table.drop(2) == (entry, None)
    assert 2 not in table
    assert table.clients() == [(1, FREE, ""), (3, FREE, "")]


def test_drop_of_paired_client_ends_the_session_and_frees_the_partner():
    table = filled(3)
    session = table.connect(1, 3)
    dropped = table.drop(3)
    assert dropped is not None
    entry, ended = dropped
    assert entry.id == 3
    assert ended is not None
    assert ended.id == session.id
    assert (ended.a.id, ended.b.id) == (3, 1)  # a is the one that left
    assert (table.get(1).peer, table.get(1).session) == (None, 0)
    assert table.clients() == [(1, FREE, ""), (2, FREE, "")]
    assert table.partner(1, session.id) is None
    assert table.register("new").id == 3
    assert table.get(3).session == 0  # the new holder of id 3 is not in the old session
    assert table.goodbye(1, session.id) is None


def test_drop_unknown_id_returns_none():
    table = filled(2)
    before = snapshot(table)
    assert table.drop(9) is None
    assert table.drop(0) is None
    table.drop(2)
    after = snapshot(table)
    assert table.drop(2) is None  # twice
    assert snapshot(table) == after
    assert before != after
    assert table.register("n").id == 2
    assert table.register("m").id == 3  # 2 was not freed twice


def test_clients_free_only_and_ascending():
    table = filled(6)
    table.drop(3)
    table.connect(5, 1)
    table.register("back")  # takes 3
    assert table.clients() == [
        (1, BUSY, ""),
        (2, FREE, ""),
        (3, FREE, ""),
        (4, FREE, ""),
        (5, BUSY, ""),
        (6, FREE, ""),
    ]
    assert table.clients(free_only=True) == [
        (2, FREE, ""),
        (3, FREE, ""),
        (4, FREE, ""),
        (6, FREE, ""),
    ]
    assert table.clients(True) == table.clients(free_only=True)


def test_clients_of_empty_table():
    table = ClientTable()
    assert table.clients() == []
    assert table.clients(free_only=True) == []
    assert table.entries() == []
    assert len(table) == 0


# ---- admit: a client the table lost track of keeps its id -----------------------------


def test_admit_takes_back_a_freed_id_and_keeps_the_rest_free():
    t: ClientTable[str] = ClientTable()
    for addr in "abc":
        t.register(addr)
    t.drop(2)
    assert t.admit(2, "b2").id == 2
    assert t.register("d").id == 4


def test_admit_an_id_above_every_id_given_so_far_leaves_the_gap_free():
    t: ClientTable[str] = ClientTable()
    t.register("a")
    assert t.admit(5, "e").id == 5
    assert [t.register(x).id for x in "bcde"] == [2, 3, 4, 6]


def test_admit_refuses_an_id_someone_holds_and_a_full_table():
    t: ClientTable[str] = ClientTable(max_clients=2)
    t.register("a")
    with pytest.raises(ProtocolError) as held:
        t.admit(1, "x")
    assert held.value.code is ErrorCode.OFFLINE
    t.register("b")
    with pytest.raises(ProtocolError) as full:
        t.admit(3, "c")
    assert full.value.code is ErrorCode.FULL
    assert len(t) == 2


# ---- the line of MATCH ----------------------------------------------------------------


def test_match_with_nobody_waiting_joins_the_line():
    table = filled(3)
    assert table.match(2) is None
    assert table.line() == [2] and table.waiting(2) and not table.waiting(1)
    assert table.clients() == [(1, FREE, ""), (2, WAITING, ""), (3, FREE, "")]
    assert table.clients(free_only=True) == [(1, FREE, ""), (3, FREE, "")]


def test_match_pairs_with_whoever_waited_longest():
    table = filled(4)
    table.match(1)
    session = table.match(2)
    assert session is not None and (session.a.id, session.b.id) == (2, 1)  # a asked
    assert table.line() == []
    assert table.match(3) is None
    assert (table.match(4).a.id, table.get(4).peer) == (4, 3)


def test_the_line_is_first_come_first_served():
    """Two wait at once only when MATCH NEW kept them apart; the longest-waiting goes first."""
    table = filled(3)
    table.goodbye(1, table.connect(1, 2).id)
    assert table.match(1) is None
    assert table.match(2, new=True) is None  # not with 1, its last partner
    assert table.line() == [1, 2]
    assert table.match(3).b.id == 1
    assert table.line() == [2]


def test_match_while_waiting_or_in_a_session_is_refused():
    table = filled(3)
    table.match(1)
    assert refused(table, table.match, 1) == "ERROR WAITING"
    assert refused(table, table.match, 1, True) == "ERROR WAITING"
    table.connect(2, 3)
    assert refused(table, table.match, 2) == "ERROR TALKING 3"


def test_cancel_leaves_the_line():
    table = filled(3)
    table.match(1)
    table.cancel(1)
    assert table.line() == [] and table.match(2) is None  # nobody to pair 2 with
    assert refused(table, table.cancel, 1) == "ERROR NOT_WAITING"
    table.connect(1, 3)
    assert refused(table, table.cancel, 1) == "ERROR TALKING 3"


def test_connect_to_a_waiting_client_takes_it_out_of_the_line():
    table = filled(3)
    table.match(1)
    table.connect(2, 1)
    assert table.line() == [] and table.match(3) is None


def test_a_waiting_client_that_connects_leaves_the_line():
    table = filled(3)
    table.match(1)
    table.connect(1, 3)
    assert table.line() == []


def test_a_waiting_client_that_leaves_leaves_the_line():
    table = filled(2)
    table.match(1)
    table.drop(1)
    assert table.line() == [] and table.match(2) is None
    assert table.register("new").id == 1  # a newcomer with its id does not wait
    assert table.line() == [2]


def test_match_new_skips_the_last_partner_both_ways():
    table = filled(3)
    table.goodbye(1, table.connect(1, 2).id)
    assert table.get(1).last_peer == (2, 0.0) and table.get(2).last_peer == (1, 0.0)
    table.match(1, new=True)
    assert table.match(2) is None  # 1 asked NEW: its last partner is not for it
    assert table.line() == [1, 2]
    table.cancel(1)
    table.cancel(2)
    table.match(1)
    assert table.match(2).b.id == 1  # neither asked NEW: last partners may meet again


def test_match_new_skips_the_last_partner_not_a_newcomer_with_its_id():
    table = ClientTable()
    table.register("a", since=1.0)
    table.register("b", since=2.0)
    table.goodbye(1, table.connect(1, 2).id)
    table.drop(2)
    assert table.register("c", since=3.0).id == 2
    table.match(2)
    assert table.match(1, new=True).b.id == 2


def test_a_session_ended_by_leaving_sets_the_last_partner():
    table = filled(2)
    table.connect(1, 2)
    table.drop(2)
    assert table.get(1).last_peer == (2, 0.0)


def test_requeue_puts_a_free_client_back_at_the_head_of_the_line():
    table = filled(4)
    table.match(1, new=True)
    table.connect(2, 1)  # out of the line
    assert not table.requeue(1)  # in a session: no
    table.drop(2)
    table.match(3)
    assert table.requeue(1) and table.line() == [1, 3] and table.asked_new(1)
    assert not table.requeue(1)  # never twice
    assert not table.requeue(9)


def test_pair_from_elsewhere_takes_both_out_of_the_line():
    table = filled(2)
    table.match(1)
    table.pair(2, 1, 7)
    assert table.line() == []


# ---- names -------------------------------------------------------------------------------


def test_name_is_unique_without_regard_to_case():
    table = filled(3)
    table.name(1, "Ann")
    assert table.named("ann") == table.named("ANN") == 1
    assert refused(table, table.name, 2, "aNN") == "ERROR NAME_TAKEN aNN"
    table.name(1, "ANN")  # its own name, in another case
    assert table.get(1).name == "ANN"
    assert table.clients() == [(1, FREE, "ANN"), (2, FREE, ""), (3, FREE, "")]


def test_renaming_frees_the_old_name_and_no_name_clears_it():
    table = filled(2)
    table.name(1, "ann")
    table.name(1, "bo")
    assert table.named("ann") is None and table.named("bo") == 1
    table.name(2, "ann")
    table.name(1, "")
    assert table.named("bo") is None and table.get(1).name == ""
    table.name(1, "")  # none to drop: still fine


def test_a_name_is_freed_when_its_holder_leaves():
    table = filled(2)
    table.name(1, "ann")
    table.drop(1)
    assert table.named("ann") is None
    table.name(2, "Ann")
    assert table.register("x").name == ""  # a newcomer with the id has no name


def test_names_show_with_every_status():
    table = filled(4)
    table.name(1, "a")
    table.name(3, "c")
    table.connect(1, 2)
    table.match(3)
    assert table.clients() == [(1, BUSY, "a"), (2, BUSY, ""), (3, WAITING, "c"), (4, FREE, "")]
    assert table.clients(free_only=True) == [(4, FREE, "")]


# ---- restore -----------------------------------------------------------------------------


def test_restore_takes_names_and_the_line_in_order():
    table = ClientTable()
    entries = [Entry(1, "a", name="Ann"), Entry(2, "b"), Entry(3, "c", 4, 9), Entry(4, "d", 3, 9)]
    assert table.restore(entries, 9, [(2, False), (1, True), (3, False)]) == []
    assert table.line() == [2, 1]  # 3 is in a session: not waiting
    assert table.asked_new(1) and not table.asked_new(2)
    assert table.named("ann") == 1
    assert table.connect(1, 2).id == 10


def test_restore_keeps_a_clashing_name_for_the_lower_id():
    table = ClientTable()
    two, one = Entry(2, "b", name="ann"), Entry(1, "a", name="Ann")
    assert table.restore([two, one], 0) == [two]
    assert two.name == "" and table.named("ANN") == 1
