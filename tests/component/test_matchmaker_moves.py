"""matchmaker.service with ``migrate``: a session across workers first moves one socket.

The matchmaker sends ``Move`` to the worker of the end that gives way, and
both ends hear ``CONNECTED`` (``Paired``) only once a ``Placed`` says where that
end lives now. Meanwhile nothing the other end asks may be answered in a way
that shows the session before its ``CONNECTED``; and whoever leaves or dies
meanwhile, nobody stays BUSY and no id is lost.
"""

from __future__ import annotations

import pytest

from ipc import messages as m
from matchmaker.service import Matchmaker, address
from matchmaker.table import ClientTable
from tests.component.test_matchmaker_service import Clock, Harness, answer, refuse
from wire.replies import BUSY, FREE


class MoveHarness(Harness):
    def __init__(self, workers: int = 2, max_clients: int = 100) -> None:
        super().__init__(workers, max_clients)
        self.mm = Matchmaker(ClientTable(max_clients), self.outboxes, migrate=True)


@pytest.fixture
def h():
    return MoveHarness()


def test_a_session_across_workers_starts_with_a_move_of_the_requester_on_a_tie(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    assert h.handle(0, m.Connect(a, b, 10)) == [(0, m.Move(10, a, 1, 1))]
    assert h.mm.table.clients() == [
        (a, BUSY, ""),
        (b, BUSY, ""),
    ]  # listed BUSY from the decision on


def test_the_end_on_the_fuller_worker_moves(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.register(1, 21)
    assert h.handle(0, m.Connect(a, b, 10)) == [(1, m.Move(20, b, 1, 0))]


def test_on_one_worker_nothing_moves(h):
    a = h.register(1, 10)
    b = h.register(1, 11)
    out = h.handle(1, m.Connect(a, b, 10))
    assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]


def test_placed_on_the_partners_worker_pairs_them_there_target_first(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [
        (1, m.Paired(key=20, session=1, peer=a, peer_worker=1, peer_key=25, requested=False)),
        (1, m.Paired(key=25, session=1, peer=b, peer_worker=1, peer_key=20, requested=True)),
    ]
    assert h.mm.table.get(a).addr == address(1, 25)
    assert h.mm.counts == [0, 2]
    assert h.handle(1, m.Relay(a, 1, "late", 1)) == [(1, m.Deliver(20, 1, "late", 1))]


def test_a_moved_target_is_paired_where_it_landed(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.register(1, 21)
    h.handle(0, m.Connect(a, b, 10))
    assert h.handle(0, m.Placed(11, b, 1, None)) == [
        (0, m.Paired(key=11, session=1, peer=a, peer_worker=0, peer_key=10, requested=False)),
        (0, m.Paired(key=10, session=1, peer=b, peer_worker=0, peer_key=11, requested=True)),
    ]


def test_placed_where_it_was_pairs_them_across_workers(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    assert h.handle(0, m.Placed(10, a, 1, m.Connect(a, b, 10))) == [
        (1, m.Paired(key=20, session=1, peer=a, peer_worker=0, peer_key=10, requested=False)),
        (0, m.Paired(key=10, session=1, peer=b, peer_worker=1, peer_key=20, requested=True)),
    ]


def test_the_partners_requests_wait_for_its_connected(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    c = h.register(0, 11)
    h.handle(0, m.Connect(a, b, 10))
    assert h.handle(1, m.Get(b, False, 20), m.Connect(b, c, 20)) == []
    assert h.handle(0, m.Get(c, False, 11)) == [(0, answer(11, "CLIENTS 1=BUSY 2=BUSY 3=FREE"))]
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [
        (1, m.Paired(20, 1, a, 1, 25, False)),
        (1, m.Paired(25, 1, b, 1, 20, True)),
        (1, answer(20, "CLIENTS 1=BUSY 2=BUSY 3=FREE")),
        (1, answer(20, f"ERROR TALKING {a}")),
    ]


def test_the_partner_leaving_during_the_move_answers_the_connect_again(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    h.handle(1, m.Get(b, False, 20))  # held for the move, void once b has gone
    assert h.handle(1, m.Drop(b, 20)) == [(0, m.Ended(10, 1, b))]  # a's old worker ignores it
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [
        (1, answer(25, f"ERROR OFFLINE {b}"))
    ]
    assert h.mm.table.clients() == [(a, FREE, "")]
    assert h.mm.table.get(a).addr == address(1, 25)


def test_the_mover_leaving_answers_what_its_partner_asked(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    h.handle(1, m.Get(b, True, 20))
    assert h.handle(0, m.Drop(a, 10, True)) == [
        (1, answer(20, f"CLIENTS {b}=FREE")),
        (1, m.Ended(20, 1, a)),  # b's worker ignores it: b never heard of the session
        (0, refuse(10, "BYE")),
    ]
    assert h.mm.moves == {}


def test_a_client_lost_on_its_way_to_a_dead_worker_is_freed(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    h.log.clear()
    h.mm.worker_gone(1)
    assert h.mm.table.clients() == []
    assert h.mm.moves == {}
    assert h.mm.counts == [0, 0]


def test_a_client_that_outlived_its_old_worker_keeps_its_id(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    h.mm.worker_gone(0)  # a was in flight: the matchmaker cannot know it made it
    h.log.clear()
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [
        (1, m.Paired(20, 2, a, 1, 25, False)),  # its CONNECT, asked again: on one worker now
        (1, m.Paired(25, 2, b, 1, 20, True)),
    ]
    assert h.mm.table.get(a).addr == address(1, 25)


def test_a_client_whose_id_went_to_someone_else_meanwhile_is_closed(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))
    h.mm.worker_gone(0)
    assert h.register(1, 21) == a  # the smallest free id
    h.log.clear()
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [(1, refuse(25, "OUTAGE"))]


def test_a_fresh_matchmaker_takes_in_a_client_it_never_heard_of(h):
    h.mm.restore({0: m.Hello((), ()), 1: m.Hello((m.ClientState(20, 2, 0, 0),), ())})
    assert h.handle(1, m.Placed(25, 1, 1, m.Connect(1, 2, 25))) == [
        (1, m.Paired(20, 1, 1, 1, 25, False)),
        (1, m.Paired(25, 1, 2, 1, 20, True)),
    ]
    assert h.mm.table.get(1).addr == address(1, 25)


def test_a_placed_client_known_at_that_address_changes_nothing(h):
    h.mm.restore({0: m.Hello((m.ClientState(10, 1, 0, 0),), ())})
    assert h.handle(0, m.Placed(10, 1, 4, m.Connect(1, 2, 10))) == []


def test_sessions_formed_in_one_batch_move_clients_both_ways():
    """Counts include the clients on their way, so a burst of CONNECTs stays balanced."""
    h = MoveHarness()
    ids = [h.register(i % 2, 10 + i) for i in range(8)]  # even ids' keys on worker 0
    out = h.handle(0, *(m.Connect(ids[i], ids[i + 1], 10 + i) for i in range(0, 8, 2)))
    assert [msg.to for _, msg in out] == [1, 0, 1, 0]
    assert h.mm.counts == [4, 4]


def test_counts_follow_moves_stays_and_drops(h):
    a, b, c = h.register(0, 10), h.register(1, 20), h.register(0, 11)
    h.handle(0, m.Connect(a, b, 10))  # worker 0 is fuller: a moves
    assert h.mm.counts == [1, 2]
    h.handle(0, m.Placed(10, a, 1, m.Connect(a, b, 10)))  # but stayed
    assert h.mm.counts == [2, 1]
    h.handle(0, m.Drop(c, 11))
    h.handle(0, m.Drop(a, 10))
    assert h.mm.counts == [0, 1]
    d = h.register(0, 12)
    h.handle(1, m.Connect(b, d, 20))  # a tie: b moves
    h.handle(1, m.Drop(b, 20))
    assert h.mm.counts == [1, 0]


def test_a_target_that_leaves_while_it_moves_gets_the_requester_offline(h):
    a, b = h.register(0, 10), h.register(1, 20)
    h.register(1, 21)
    assert h.handle(0, m.Connect(a, b, 10)) == [(1, m.Move(20, b, 1, 0))]  # b is the one moving
    assert h.handle(1, m.Drop(b, 20, True)) == [
        (0, answer(10, f"ERROR OFFLINE {b}")),  # a's CONNECT is answered, never left hanging
        (0, m.Ended(10, 1, b)),
        (1, refuse(20, "BYE")),
    ]
    assert h.mm.moves == {}


def test_a_target_lost_with_its_worker_gets_the_requester_offline(h):
    a, b = h.register(0, 10), h.register(1, 20)
    h.register(1, 21)
    h.handle(0, m.Connect(a, b, 10))
    h.log.clear()
    h.mm.worker_gone(1)
    assert h.log == [(0, answer(10, f"ERROR OFFLINE {b}")), (0, m.Ended(10, 1, b))]


def test_nothing_a_dead_workers_client_asked_is_answered(h):
    """Its keys may already belong to the restarted worker's new clients."""
    a, b = h.register(0, 10), h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))  # a moves to worker 1
    h.handle(1, m.Get(b, False, 20))  # b's GET waits for the move
    h.log.clear()
    h.mm.worker_gone(1)  # b dies, and a with it (it was on its way there)
    assert h.log == []
    assert h.mm.table.clients() == []
    assert h.mm.moves == {}


def test_a_client_freed_while_it_moves_is_not_paired_until_it_lands(h):
    """Its partner left, so the table has it FREE, but its socket is in flight: a third
    client's CONNECT to it waits for its Placed (a Move now would go to where it was)."""
    a, b = h.register(0, 10), h.register(1, 20)
    c = h.register(1, 21)
    h.register(0, 11)
    assert h.handle(0, m.Connect(a, b, 10)) == [(0, m.Move(10, a, 1, 1))]  # a tie: a moves
    h.handle(1, m.Drop(b, 20))
    assert h.handle(1, m.Connect(c, a, 21)) == []  # waits: a is on its way
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25))) == [
        (1, m.Paired(25, 2, c, 1, 21, False)),  # c's CONNECT, now a has landed by c
        (1, m.Paired(21, 2, a, 1, 25, True)),
        (1, answer(25, f"ERROR TALKING {c}")),  # a's own CONNECT, asked again
    ]
    assert h.mm.moves == {}


def test_a_deferred_request_of_a_client_gone_meanwhile_is_not_answered_to_its_ids_heir(h):
    a, b = h.register(0, 10), h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))  # a moves to worker 1
    h.handle(1, m.Get(b, False, 20))  # waits for the move
    h.handle(1, m.Drop(b, 20))  # b leaves; its id is free
    assert h.register(1, 22) == b  # and taken by a newcomer
    out = h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25)))
    assert (1, answer(22, "CLIENTS 1=BUSY 2=BUSY")) not in out  # b's GET died with b
    assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]  # a pairs with the heir


def refused_mover(h):
    """b, the target of a's CONNECT, is moving to a's worker 0 when that worker dies; b's
    id goes to a newcomer, and then b lands on worker 0's replacement as key 5."""
    a, b = h.register(0, 10), h.register(1, 20)
    h.register(1, 21)
    assert h.handle(0, m.Connect(a, b, 10)) == [(1, m.Move(20, b, 1, 0))]
    h.mm.worker_gone(0)  # a dies, and b with it for all the matchmaker can tell
    assert h.register(1, 22) == a
    assert h.register(1, 23) == b  # b's heir
    assert h.handle(0, m.Placed(5, b, 1, None)) == [(0, refuse(5, "OUTAGE"))]
    return a, b


@pytest.mark.parametrize(
    "request_",
    [
        m.Get(2, False, 5),
        m.Connect(2, 1, 5),
        m.Connect(2, 3, 5),
        m.Goodbye(2, 1, 1, 5),
        m.Drop(2, 5),
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_client_refused_on_landing_is_not_answered_for_the_id_it_lost(h, request_):
    """Regression (soak --chaos, seeds 1 and 9): a moved client drains its lines right
    after its Placed. When the Placed was refused (its id had been given away while it
    was in flight), its GET or CONNECT was answered to the id's new holder, which saw
    CLIENTS or ERROR BUSY for lines it never sent; its #CLOSE# freed the new holder's id."""
    a, b = refused_mover(h)
    before = h.mm.table.clients()
    assert h.handle(0, request_) == []
    assert h.mm.table.clients() == before
    assert h.mm.table.get(b).addr == address(1, 23)
    # the heir's own requests still work
    assert h.handle(1, m.Get(b, True, 23)) == [(1, answer(23, "CLIENTS 1=FREE 2=FREE 3=FREE"))]
    out = h.handle(1, m.Connect(b, a, 23))
    assert [(w, type(msg)) for w, msg in out] == [(1, m.Paired), (1, m.Paired)]


def test_a_refused_client_leaving_hears_only_its_own_bye(h):
    _, b = refused_mover(h)
    assert h.handle(0, m.Drop(b, 5, True)) == [(0, refuse(5, "BYE"))]
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, ""), (3, FREE, "")]
    assert h.mm.table.get(b).addr == address(1, 23)


def test_a_deferred_request_follows_its_asker_when_it_moves(h):
    """c's CONNECT to a waits for a to land; meanwhile c is paired with d and moves to
    d's worker. The answer to the CONNECT goes to c where it lives now, as its new key."""
    a, b = h.register(0, 10), h.register(1, 20)
    c = h.register(0, 11)
    for key in (12, 13, 14):
        h.register(0, key)
    d = h.register(1, 21)
    assert h.handle(0, m.Connect(a, b, 10)) == [(0, m.Move(10, a, 1, 1))]  # worker 0 fuller
    assert h.handle(0, m.Connect(c, a, 11)) == []  # waits: a is on its way
    assert h.handle(1, m.Connect(d, c, 21)) == [(0, m.Move(11, c, 2, 1))]
    out = h.handle(1, m.Placed(26, c, 2, m.Connect(c, a, 26)))
    assert out == [(1, m.Paired(26, 2, d, 1, 21, False)), (1, m.Paired(21, 2, c, 1, 26, True))]
    out = h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25)))
    assert out == [
        (1, m.Paired(20, 1, a, 1, 25, False)),
        (1, m.Paired(25, 1, b, 1, 20, True)),
        (1, answer(26, f"ERROR TALKING {d}")),  # c's CONNECT, at c's new key
    ]


def test_a_client_lost_on_its_way_frees_its_id(h):
    a, b = h.register(0, 10), h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))  # a moves to worker 1
    assert h.handle(1, m.Lost(a, 1)) == [(1, m.Ended(20, 1, a))]  # b never heard; ignores it
    assert h.mm.table.clients() == [(b, FREE, "")]
    assert h.mm.moves == {}
    assert h.mm.counts == [0, 1]


def test_a_lost_client_whose_id_was_given_away_frees_nothing(h):
    """Regression: a socket lost on its way was reported as a Drop of its id, which
    freed the id's new holder if its old worker had died and the id been given away."""
    a, b = h.register(0, 10), h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10))  # a moves to worker 1
    h.mm.worker_gone(0)
    assert h.register(1, 21) == a
    assert h.handle(1, m.Lost(a, 1)) == []
    assert h.mm.table.clients() == [(a, FREE, ""), (b, FREE, "")]


def test_a_movers_connect_still_on_its_way_from_its_old_worker_is_answered_where_it_landed(h):
    """a sent CONNECT just as b's CONNECT made it move: the copy from a's old worker
    arrives after a's Placed, when that worker no longer holds a's id. The request a
    brought along is answered from where it landed, and the late copy not again."""
    a, b = h.register(0, 10), h.register(1, 20)
    c = h.register(0, 11)
    assert h.handle(1, m.Connect(b, a, 20)) == [(0, m.Move(10, a, 1, 1))]  # a's is fuller
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, c, 25))) == [
        (1, m.Paired(25, 1, b, 1, 20, False)),
        (1, m.Paired(20, 1, a, 1, 25, True)),
        (1, answer(25, f"ERROR TALKING {b}")),
    ]
    assert h.handle(0, m.Connect(a, c, 10)) == []


def test_a_movers_connect_that_waited_for_the_move_is_answered_once(h):
    """Regression: a's CONNECT waited for a's move, and its partner left meanwhile; the
    CONNECT was answered when the move settled, and then once more from a's Placed."""
    a, b = h.register(0, 10), h.register(1, 20)
    c = h.register(1, 21)
    h.register(0, 11)
    h.register(0, 12)
    assert h.handle(1, m.Connect(b, a, 20)) == [(0, m.Move(10, a, 1, 1))]
    assert h.handle(0, m.Connect(a, c, 10)) == []  # waits for the move
    h.handle(1, m.Drop(b, 20))
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, c, 25))) == [
        (1, m.Paired(21, 2, a, 1, 25, False)),
        (1, m.Paired(25, 2, c, 1, 21, True)),
    ]


# ---- a CONNECT asked again after a move is still the one read before it ------------------


def test_a_connect_brought_along_is_not_for_a_newcomer_given_its_target_id_meanwhile():
    """a asks for t at 120 and moves for it; t leaves, and a newcomer is given t's id at
    130, before a lands. a's CONNECT, asked again from where it landed, was read before the
    newcomer had the id: OFFLINE, not a session with a stranger."""
    clock = Clock(100)
    h = Harness(migrate=True, clock=clock)
    a = h.register(0, 10)
    t = h.register(1, 20)
    assert h.handle(0, m.Connect(a, t, 10, 120)) == [(0, m.Move(10, a, 1, 1))]
    h.handle(1, m.Drop(t, 20, True))
    clock.now = 130
    assert h.register(0, 11) == t
    assert h.handle(1, m.Placed(25, a, 1, m.Connect(a, t, 25, 120), 100)) == [
        (1, answer(25, f"ERROR OFFLINE {t}"))
    ]
    assert h.mm.table.clients() == [(a, FREE, ""), (t, FREE, "")]


def test_a_client_taken_back_after_its_old_worker_died_keeps_when_it_got_its_id():
    clock = Clock(100)
    h = Harness(migrate=True, clock=clock)
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.handle(0, m.Connect(a, b, 10, 120))
    h.mm.worker_gone(0)  # a was in flight: freed, then taken back when it lands
    clock.now = 200
    out = h.handle(1, m.Placed(25, a, 1, m.Connect(a, b, 25, 120), 100))
    assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]
    assert h.mm.table.get(a).since == 100


@pytest.mark.parametrize("pinned", ["requester", "target"])
def test_a_session_with_a_pinned_end_is_relayed_and_nothing_moves(h, pinned):
    """A TLS client cannot move: neither end does, and the session is relayed."""
    a = h.handle(0, m.Register(10, pinned=pinned == "requester"))[0][1].cid
    b = h.handle(1, m.Register(20, pinned=pinned == "target"))[0][1].cid
    assert h.handle(0, m.Connect(a, b, 10)) == [
        (1, m.Paired(key=20, session=1, peer=a, peer_worker=0, peer_key=10, requested=False)),
        (0, m.Paired(key=10, session=1, peer=b, peer_worker=1, peer_key=20, requested=True)),
    ]
    assert h.handle(0, m.Relay(a, 1, "hi", 1)) == [(1, m.Deliver(20, 1, "hi", 1))]


def test_a_restarted_matchmaker_still_knows_a_pinned_client_from_the_hello(h):
    h.mm.restore(
        {
            0: m.Hello((m.ClientState(10, 1, 0, 0, pinned=True),), ()),
            1: m.Hello((m.ClientState(20, 2, 0, 0),), ()),
        }
    )
    out = h.handle(1, m.Connect(2, 1, 20))
    assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]


def test_a_match_across_workers_moves_one_end_first(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    assert h.handle(1, m.Match(b, 20)) == [(1, answer(20, "WAITING"))]
    assert h.handle(0, m.Match(a, 10, 1)) == [(0, m.Move(10, a, 1, 1))]
    assert h.handle(1, m.Placed(25, a, 1, m.Match(a, 25, 1))) == [
        (1, m.Paired(20, 1, a, 1, 25, False)),
        (1, m.Paired(25, 1, b, 1, 20, True)),
    ]


def test_the_waiter_leaving_during_the_move_asks_the_match_again(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.register(1, 21)  # worker 1 is fuller: b moves to a
    h.handle(1, m.Match(b, 20))
    assert h.handle(0, m.Match(a, 10, 1, True)) == [(1, m.Move(20, b, 1, 0))]
    assert h.handle(1, m.Drop(b, 20)) == [
        (0, answer(10, "WAITING")),  # nobody else waits
        (0, m.Ended(10, 1, b)),  # a's worker ignores it: a never heard of the session
    ]
    assert h.mm.table.line() == [a] and h.mm.table.asked_new(a)


def test_the_matcher_leaving_during_the_move_puts_the_waiter_back_first_in_line(h):
    """b never heard of the session: it still waits, and ahead of anyone who came since."""
    a = h.register(0, 10)
    b = h.register(1, 20)
    c = h.register(0, 11)
    h.handle(1, m.Match(b, 20, 1, True))
    assert h.handle(0, m.Match(a, 10)) == [(0, m.Move(10, a, 1, 1))]
    h.handle(0, m.Match(c, 11))  # nobody waits now: c does
    h.handle(0, m.Drop(a, 10))
    assert h.mm.table.line() == [b, c] and h.mm.table.asked_new(b)
    assert h.handle(1, m.Get(b, False, 20)) == [(1, answer(20, f"CLIENTS {b}=WAITING {c}=WAITING"))]


def test_the_matcher_leaving_while_the_waiter_moves_puts_the_waiter_back_in_line(h):
    a = h.register(0, 10)
    b = h.register(1, 20)
    h.register(1, 21)  # worker 1 is fuller: the waiter b moves to a
    h.handle(1, m.Match(b, 20))
    assert h.handle(0, m.Match(a, 10)) == [(1, m.Move(20, b, 1, 0))]
    h.handle(0, m.Drop(a, 10))
    assert h.mm.table.line() == []  # b is on its way
    assert h.handle(0, m.Placed(25, b, 1, None)) == []
    assert h.mm.table.line() == [b]
