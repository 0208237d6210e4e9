"""matchmaker.service.Matchmaker: worker reports in, the right messages out, in order.

The outboxes are fakes that record what each worker would receive, plus one
log across all of them, because the order between workers matters too.
"""

from __future__ import annotations

import pytest

from ipc import messages as m
from matchmaker.service import Matchmaker, address, key_of, worker_of
from matchmaker.table import ClientTable
from wire.replies import FREE, Listing, parse_reply


def answer(key: int, line: str) -> m.Answer:
    """The typed answer whose v1 line is ``line`` (a GET's as the matchmaker renders it)."""
    if line.split()[0] == "CLIENTS":
        return m.Answer.of(key, Listing(line))
    return m.Answer.of(key, parse_reply(line))  # type: ignore[arg-type]


def refuse(key: int, line: str) -> m.Refuse:
    return m.Refuse.of(key, parse_reply(line))  # type: ignore[arg-type]


class FakeOutbox:
    """Records what one worker would be sent; ``log`` is shared by all outboxes."""

    def __init__(self, index, log):
        self.index = index
        self.log = log
        self.sent = []
        self.flushes = 0

    def send(self, message):
        self.sent.append(message)
        self.log.append((self.index, message))

    def flush(self):
        self.flushes += 1


class Clock:
    """A clock the test moves by hand (the matchmaker reads it for each new client)."""

    def __init__(self, now=100):
        self.now = now

    def __call__(self):
        return self.now


class Harness:
    def __init__(self, workers=2, max_clients=100, migrate=False, clock=None):
        self.log = []
        self.outboxes = [FakeOutbox(i, self.log) for i in range(workers)]
        options = {} if clock is None else {"clock": clock}
        self.mm = Matchmaker(ClientTable(max_clients), self.outboxes, migrate, **options)

    def handle(self, worker, *messages):
        """Feed one batch; return (and forget) what it caused, as (worker, message)."""
        self.log.clear()
        self.mm.handle(worker, list(messages))
        return list(self.log)

    def register(self, worker, key):
        (out,) = self.handle(worker, m.Register(key))
        assert out[0] == worker and isinstance(out[1], m.Welcome)
        return out[1].cid

    def pair(self, requester, target):
        """Pair two registered ids; return the session id."""
        worker = self.worker_of(requester)
        out = self.handle(worker, m.Connect(requester, target, self.key_of(requester)))
        assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]
        return out[0][1].session

    def worker_of(self, cid):
        return worker_of(self.mm.table.get(cid).addr)

    def key_of(self, cid):
        return key_of(self.mm.table.get(cid).addr)


@pytest.fixture
def h():
    return Harness()


# ---- register ----------------------------------------------------------------------


def test_register_welcomes_with_the_smallest_free_id(h):
    assert h.handle(0, m.Register(10)) == [(0, m.Welcome(10, 1))]
    assert h.handle(1, m.Register(10)) == [(1, m.Welcome(10, 2))]
    assert h.handle(0, m.Register(11), m.Register(12)) == [
        (0, m.Welcome(11, 3)),
        (0, m.Welcome(12, 4)),
    ]
    assert h.mm.table.get(2).addr == address(1, 10)


def test_register_beyond_max_clients_is_refused():
    h = Harness(max_clients=2)
    h.register(0, 1)
    h.register(1, 2)
    assert h.handle(1, m.Register(3)) == [(1, refuse(3, "ERROR FULL"))]
    assert len(h.mm.table) == 2
    h.handle(0, m.Drop(1, 1))
    assert h.handle(1, m.Register(3)) == [(1, m.Welcome(3, 1))]


# ---- get ---------------------------------------------------------------------------


def test_get_answers_with_every_client(h):
    h.register(0, 10)
    h.register(1, 20)
    h.register(1, 30)
    h.pair(1, 2)
    assert h.handle(1, m.Get(3, False, 30)) == [(1, answer(30, "CLIENTS 1=BUSY 2=BUSY 3=FREE"))]
    assert h.handle(1, m.Get(3, True, 30)) == [(1, answer(30, "CLIENTS 3=FREE"))]
    assert h.handle(0, m.Get(1, False, 10)) == [(0, answer(10, "CLIENTS 1=BUSY 2=BUSY 3=FREE"))]


def test_get_free_with_none_free(h):
    h.register(0, 10)
    h.register(0, 11)
    h.pair(1, 2)
    assert h.handle(0, m.Get(1, True, 10)) == [(0, answer(10, "CLIENTS"))]


# ---- connect -----------------------------------------------------------------------


def test_connect_across_workers_tells_the_target_first(h):
    h.register(0, 10)  # id 1 on worker 0
    h.register(1, 20)  # id 2 on worker 1
    assert h.handle(0, m.Connect(1, 2, 10)) == [
        (1, m.Paired(key=20, session=1, peer=1, peer_worker=0, peer_key=10, requested=False)),
        (0, m.Paired(key=10, session=1, peer=2, peer_worker=1, peer_key=20, requested=True)),
    ]


def test_connect_on_one_worker_tells_the_target_first(h):
    h.register(1, 10)  # id 1
    h.register(1, 11)  # id 2
    h.register(1, 12)  # id 3
    out = h.handle(1, m.Connect(3, 1, 12))
    assert out == [
        (1, m.Paired(key=10, session=1, peer=3, peer_worker=1, peer_key=12, requested=False)),
        (1, m.Paired(key=12, session=1, peer=1, peer_worker=1, peer_key=10, requested=True)),
    ]
    assert h.outboxes[1].sent[-2:] == [msg for _, msg in out]
    assert h.outboxes[0].sent == []


def test_sessions_get_new_ids(h):
    h.register(0, 10)
    h.register(1, 20)
    first = h.pair(1, 2)
    h.handle(0, m.Drop(1, 10))
    h.register(0, 11)  # id 1 again
    assert h.pair(2, 1) == first + 1


@pytest.mark.parametrize(
    ("requester", "target", "line"),
    [
        (1, 9, "ERROR OFFLINE 9"),
        (1, 1, "ERROR SELF"),
        (1, 2, "ERROR BUSY 2"),
        (4, 3, "ERROR BUSY 3"),
        (2, 1, "ERROR TALKING 3"),
        (3, 3, "ERROR TALKING 2"),
    ],
)
def test_connect_errors_answer_only_the_requester(requester, target, line):
    h = Harness()
    keys = {1: (0, 10), 2: (1, 20), 3: (0, 30), 4: (1, 40)}
    for worker, key in keys.values():
        h.register(worker, key)
    h.pair(2, 3)
    before = h.mm.table.clients()
    worker, key = keys[requester]
    assert h.handle(worker, m.Connect(requester, target, key)) == [(worker, answer(key, line))]
    assert h.mm.table.clients() == before


def test_crossed_connects_pair_once(h):
    """A->B and B->A in flight together: the first pairs, the second gets TALKING."""
    h.register(0, 10)
    h.register(1, 20)
    first = h.handle(0, m.Connect(1, 2, 10))
    assert [msg.requested for _, msg in first] == [False, True]
    assert h.handle(1, m.Connect(2, 1, 20)) == [(1, answer(20, "ERROR TALKING 1"))]


# ---- ids change hands: a CONNECT is for the client that held the id when it was read ----


def test_each_client_is_stamped_when_it_gets_its_id_and_its_worker_told():
    clock = Clock(100)
    h = Harness(clock=clock)
    assert h.handle(0, m.Register(10)) == [(0, m.Welcome(10, 1, 100))]
    clock.now = 150
    assert h.handle(1, m.Register(20)) == [(1, m.Welcome(20, 2, 150))]
    assert (h.mm.table.get(1).since, h.mm.table.get(2).since) == (100, 150)


def test_a_connect_read_before_a_newcomer_took_the_id_is_offline():
    """1 asks for 2 at 120; 2 leaves, and a newcomer is given id 2 at 130."""
    clock = Clock(100)
    h = Harness(clock=clock)
    h.register(0, 10)
    h.register(1, 20)
    h.handle(1, m.Drop(2, 20, True))
    clock.now = 130
    assert h.register(1, 21) == 2
    assert h.handle(0, m.Connect(1, 2, 10, 120)) == [(0, answer(10, "ERROR OFFLINE 2"))]
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, "")]
    out = h.handle(0, m.Connect(1, 2, 10, 140))  # asked once the newcomer had the id
    assert [(w, type(msg)) for w, msg in out] == [(1, m.Paired), (0, m.Paired)]


def test_a_connect_read_after_the_target_got_its_id_pairs():
    clock = Clock(100)
    h = Harness(clock=clock)
    h.register(0, 10)
    h.register(1, 20)
    out = h.handle(0, m.Connect(1, 2, 10, 100))
    assert [type(msg) for _, msg in out] == [m.Paired, m.Paired]


# ---- relay -------------------------------------------------------------------------


def test_relay_in_the_current_session_is_delivered_to_the_partner(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    assert h.handle(0, m.Relay(1, sid, "hello")) == [(1, m.Deliver(20, sid, "hello"))]
    assert h.handle(1, m.Relay(2, sid, "back")) == [(0, m.Deliver(10, sid, "back"))]
    assert h.handle(0, m.Relay(1, sid, "a"), m.Relay(1, sid, "b")) == [
        (1, m.Deliver(20, sid, "a")),
        (1, m.Deliver(20, sid, "b")),
    ]


def test_relay_from_a_stale_session_is_dropped(h):
    h.register(0, 10)
    h.register(1, 20)
    h.register(1, 30)
    old = h.pair(1, 2)
    h.handle(0, m.Goodbye(1, old, 2, 10))
    assert h.handle(0, m.Relay(1, old, "late")) == []
    assert h.handle(1, m.Relay(2, old, "late")) == []
    new = h.pair(1, 3)
    assert h.handle(0, m.Relay(1, old, "late")) == []  # not into the new session
    assert h.handle(0, m.Relay(1, new, "now")) == [(1, m.Deliver(30, new, "now"))]
    assert h.handle(1, m.Relay(2, new, "not mine")) == []


def test_relay_from_a_dropped_id_given_to_someone_else_is_dropped(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    h.handle(1, m.Drop(2, 20))
    assert h.register(1, 21) == 2
    assert h.handle(1, m.Relay(2, sid, "ghost")) == []


# ---- goodbye -----------------------------------------------------------------------


def test_goodbye_ends_the_session_for_the_other_end(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    out = h.handle(0, m.Goodbye(1, sid, 2, 10))
    ended = [(w, msg) for w, msg in out if isinstance(msg, m.Ended)]
    assert ended == [(1, m.Ended(20, sid, 1))]  # only the other end gets Ended
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, "")]
    assert h.pair(2, 1) == sid + 1  # both can pair again


def test_goodbye_answers_the_requester_after_ending(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    assert h.handle(0, m.Goodbye(1, sid, 2, 10)) == [
        (1, m.Ended(20, sid, 1)),
        (0, answer(10, "ENDED 2")),
    ]


def test_stale_goodbye_ends_nothing(h):
    """The partner's goodbye won the race: the late one changes nothing, tells no one else."""
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    h.handle(1, m.Goodbye(2, sid, 1, 20))
    assert h.handle(0, m.Goodbye(1, sid, 2, 10)) == [(0, answer(10, "ENDED 2"))]
    h.register(1, 30)
    new = h.pair(2, 3)
    before = h.mm.table.clients()
    assert h.handle(0, m.Goodbye(1, sid, 2, 10)) == [(0, answer(10, "ENDED 2"))]
    assert h.mm.table.clients() == before
    assert h.mm.table.partner(2, new).id == 3


def test_goodbye_from_an_unknown_client_is_ignored(h):
    h.register(0, 10)
    assert h.handle(0, m.Goodbye(7, 1, 1, 11)) == []


# ---- drop --------------------------------------------------------------------------


def test_drop_of_a_paired_client_ends_the_session_and_frees_the_id(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    assert h.handle(1, m.Drop(2, 20)) == [(0, m.Ended(10, sid, 2))]
    assert h.mm.table.clients() == [(1, FREE, "")]
    assert h.handle(1, m.Register(21)) == [(1, m.Welcome(21, 2))]
    assert h.handle(0, m.Get(1, False, 10)) == [(0, answer(10, "CLIENTS 1=FREE 2=FREE"))]


def test_drop_of_a_free_client_tells_no_one(h):
    h.register(0, 10)
    h.register(1, 20)
    assert h.handle(1, m.Drop(2, 20)) == []
    assert h.mm.table.clients() == [(1, FREE, "")]


def test_drop_with_answer_says_bye_after_the_partner_is_told(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    assert h.handle(1, m.Drop(2, 20, True)) == [(0, m.Ended(10, sid, 2)), (1, refuse(20, "BYE"))]
    assert 2 not in h.mm.table


def test_drop_of_an_unknown_client_is_ignored(h):
    h.register(0, 10)
    assert h.handle(0, m.Drop(5, 12)) == []
    # but a leaving client always gets its BYE: a restarted matchmaker may never have known it
    assert h.handle(0, m.Drop(5, 12, True)) == [(0, refuse(12, "BYE"))]
    h.handle(0, m.Drop(1, 10))
    assert h.handle(0, m.Drop(1, 10)) == []


def test_requests_from_a_dropped_client_get_nothing(h):
    h.register(0, 10)
    h.register(1, 20)
    h.handle(0, m.Drop(1, 10))
    assert h.handle(0, m.Get(1, False, 10)) == []
    assert h.handle(0, m.Connect(1, 2, 10)) == []
    assert h.handle(0, m.Relay(1, 1, "x")) == []
    assert h.mm.table.clients() == [(2, FREE, "")]


# ---- batching ----------------------------------------------------------------------


def test_a_batch_is_handled_in_order(h):
    out = h.handle(
        0,
        m.Register(10),
        m.Register(11),
        m.Connect(1, 2, 10),
        m.Relay(1, 1, "hi"),
        m.Goodbye(2, 1, 1, 11),
        m.Get(1, False, 10),
    )
    assert out == [
        (0, m.Welcome(10, 1)),
        (0, m.Welcome(11, 2)),
        (0, m.Paired(11, 1, 1, 0, 10, False)),
        (0, m.Paired(10, 1, 2, 0, 11, True)),
        (0, m.Deliver(11, 1, "hi")),
        (0, m.Ended(10, 1, 2)),
        (0, answer(11, "ENDED 1")),
        (0, answer(10, "CLIENTS 1=FREE 2=FREE")),
    ]


def test_flush_flushes_every_outbox():
    h = Harness(workers=3)
    h.mm.flush()
    assert [o.flushes for o in h.outboxes] == [1, 1, 1]


# ---- a worker dies -------------------------------------------------------------------


def test_a_dead_workers_clients_are_freed_and_their_partners_told(h):
    a = h.register(0, 10)  # worker 0
    b = h.register(1, 20)  # worker 1, paired with a
    c = h.register(1, 21)  # worker 1, paired with d on worker 1
    d = h.register(1, 22)
    e = h.register(0, 11)  # worker 0, FREE
    s = h.pair(a, b)
    h.pair(c, d)
    h.log.clear()
    h.mm.worker_gone(1)
    assert h.log == [(0, m.Ended(10, s, b))]  # only the partner on a live worker hears
    assert h.mm.table.clients() == [(a, FREE, ""), (e, FREE, "")]
    assert h.register(0, 12) == min({b, c, d})  # their ids are free again


# ---- a restarted matchmaker ----------------------------------------------------------


def state(key, cid, session=0, peer=0, last_session=None, since=0):
    last = session if last_session is None else last_session
    return m.ClientState(key, cid, session, peer, last, since)


def test_restore_keeps_ids_sessions_and_answers_open_requests():
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 3), state(11, 2)), (m.Get(2, False, 11),)),
            1: m.Hello((state(20, 3, 7, 1),), (m.Register(21),)),
        }
    )
    assert h.log == [(0, answer(11, "CLIENTS 1=BUSY 2=FREE 3=BUSY")), (1, m.Welcome(21, 4))]
    assert h.mm.table.partner(1, 7).id == 3
    h.log.clear()
    assert h.handle(0, m.Relay(1, 7, "still here", 5)) == [(1, m.Deliver(20, 7, "still here", 5))]
    h.handle(1, m.Register(22))
    assert h.handle(0, m.Connect(2, 5, 11)) == [
        (1, m.Paired(22, 8, 2, 0, 11, False)),  # sessions go on above the highest known
        (0, m.Paired(11, 8, 5, 1, 22, True)),
    ]


def test_restore_keeps_when_each_client_got_its_id():
    """Requests in flight through a restart are judged by the stamps the clients had,
    not by when the new matchmaker heard of them: 2 got its id at 110, 3 at 300; the
    new matchmaker starts at 1000."""
    clock = Clock(1000)
    h = Harness(clock=clock)
    h.mm.restore(
        {
            0: m.Hello(
                (state(10, 1, since=100), state(11, 4, since=120)),
                (m.Connect(1, 2, 10, 200), m.Connect(4, 3, 11, 250)),
            ),
            1: m.Hello((state(20, 2, since=110), state(21, 3, since=300)), (m.Register(22),)),
        }
    )
    assert h.log == [
        (1, m.Paired(20, 1, 1, 0, 10, False)),  # asked at 200 of the holder since 110
        (0, m.Paired(10, 1, 2, 1, 20, True)),
        (0, answer(11, "ERROR OFFLINE 3")),  # asked at 250 of a holder since 300
        (1, m.Welcome(22, 5, 1000)),
    ]
    assert [h.mm.table.get(cid).since for cid in (1, 2, 3, 4, 5)] == [100, 110, 300, 120, 1000]


def test_restore_ends_a_session_whose_other_end_is_gone():
    h = Harness()
    h.mm.restore({0: m.Hello((state(10, 1, 7, 2),), ()), 1: m.Hello((), ())})
    assert h.log == [(0, m.Ended(10, 7, 2))]
    assert h.mm.table.clients() == [(1, FREE, "")]


def test_restore_completes_a_session_whose_connected_was_lost():
    """The old matchmaker paired 1 with 2, but only 1's worker heard it before it died."""
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 2),), ()),
            1: m.Hello((state(20, 2),), (m.Connect(2, 1, 20),)),
        }
    )
    assert h.log == [(1, m.Paired(20, 7, 1, 0, 10, True))]  # answers 2's CONNECT
    assert h.mm.table.partner(2, 7).id == 1


def test_restore_lets_an_open_goodbye_end_the_session():
    """2 said goodbye; the old matchmaker died before 1 heard ENDED."""
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 2),), ()),
            1: m.Hello((state(20, 2, 0, 0, last_session=7),), (m.Goodbye(2, 7, 1, 20),)),
        }
    )
    assert h.log == [(0, m.Ended(10, 7, 2)), (1, answer(20, "ENDED 1"))]
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, "")]


def test_restore_ends_a_stale_session_when_the_peer_moved_on():
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 2), state(11, 3, 9, 2)), ()),
            1: m.Hello((state(20, 2, 9, 3),), ()),
        }
    )
    assert h.log == [(0, m.Ended(10, 7, 2))]
    assert h.mm.table.partner(2, 9).id == 3


def test_received_is_confirmed_to_the_sender(h):
    h.register(0, 10)
    h.register(1, 20)
    sid = h.pair(1, 2)
    assert h.handle(1, m.Received(2, sid, 42)) == [(0, m.Confirm(10, sid, 42))]
    assert h.handle(1, m.Received(2, sid + 1, 42)) == []


def test_restore_does_not_revive_a_session_the_free_end_saw_end():
    """2 said goodbye and heard ENDED; 1's ENDED died with the old matchmaker."""
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 2),), ()),
            1: m.Hello((state(20, 2, 0, 0, last_session=7),), ()),
        }
    )
    assert h.log == [(0, m.Ended(10, 7, 2))]  # not a second CONNECTED for 2
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, "")]


def test_a_worker_lost_before_the_table_is_rebuilt_is_forgotten():
    from matchmaker.service import Startup

    h = Harness()
    starting = Startup(h.mm, 2)
    starting.take(0, [m.Hello((state(10, 1, 7, 2),), ()), m.Register(11)])
    starting.forget(0)  # worker 0 died; its replacement says hello with nothing
    starting.take(0, [m.Hello((), ())])
    starting.take(1, [m.Hello((state(20, 2, 7, 1),), ())])
    assert not starting.waiting
    assert h.log == [(1, m.Ended(20, 7, 1))]  # nobody welcomed under an old key
    assert h.mm.table.clients() == [(2, FREE, "")]


# ---- requests from a connection that does not hold the id ---------------------------


def test_requests_from_an_ids_old_holder_never_reach_its_heir(h):
    """Regression: requests named their client only by id, and were answered to whoever
    held the id when they arrived. A socket that lost its id (its Drop raced its last
    request, a moved client refused on landing) had its answers written to the next
    client given that id, which saw replies to lines it never sent."""
    h.register(0, 10)  # id 1
    h.register(1, 20)  # id 2
    h.handle(0, m.Drop(1, 10))
    assert h.register(1, 21) == 1  # the heir
    before = h.mm.table.clients()
    assert h.handle(0, m.Get(1, False, 10)) == []
    assert h.handle(0, m.Connect(1, 2, 10)) == []
    assert h.handle(0, m.Goodbye(1, 5, 2, 10)) == []
    assert h.handle(0, m.Drop(1, 10)) == []  # does not free the heir's id
    assert h.handle(0, m.Drop(1, 10, True)) == [(0, refuse(10, "BYE"))]  # its own BYE only
    assert h.mm.table.clients() == before
    assert h.mm.table.get(1).addr == address(1, 21)
    # the heir's own requests are answered as ever
    assert h.handle(1, m.Get(1, False, 21)) == [(1, answer(21, "CLIENTS 1=FREE 2=FREE"))]
    sid = h.pair(1, 2)
    assert h.handle(1, m.Goodbye(1, sid, 2, 21)) == [
        (1, m.Ended(20, sid, 1)),
        (1, answer(21, "ENDED 2")),
    ]


def test_the_same_key_on_another_worker_is_not_the_holder(h):
    """Keys are per worker: key 10 on worker 1 is not key 10 on worker 0."""
    h.register(0, 10)  # id 1
    h.register(1, 20)  # id 2
    assert h.handle(1, m.Get(1, False, 10)) == []
    assert h.handle(1, m.Connect(1, 2, 10)) == []
    assert h.handle(1, m.Drop(1, 10)) == []
    assert h.mm.table.clients() == [(1, FREE, ""), (2, FREE, "")]


# ---- MATCH, CANCEL, NAME -------------------------------------------------------------------


def test_match_waits_then_pairs_the_next_asker_across_workers(h):
    a, b = h.register(0, 10), h.register(1, 20)
    assert h.handle(0, m.Match(a, 10)) == [(0, answer(10, "WAITING"))]
    assert h.handle(1, m.Get(b, False, 20)) == [(1, answer(20, f"CLIENTS {a}=WAITING {b}=FREE"))]
    assert h.handle(1, m.Get(b, True, 20)) == [(1, answer(20, f"CLIENTS {b}=FREE"))]
    assert h.handle(1, m.Match(b, 20)) == [
        (0, m.Paired(10, 1, b, 1, 20, False)),  # the one that waited hears first
        (1, m.Paired(20, 1, a, 0, 10, True)),  # and the MATCH is answered
    ]
    assert h.mm.table.line() == []


def test_match_while_waiting_and_cancel(h):
    a = h.register(0, 10)
    h.handle(0, m.Match(a, 10))
    assert h.handle(0, m.Match(a, 10, 5, True)) == [(0, answer(10, "ERROR WAITING"))]
    assert h.handle(0, m.Cancel(a, 10)) == [(0, answer(10, "CANCELLED"))]
    assert h.handle(0, m.Cancel(a, 10)) == [(0, answer(10, "ERROR NOT_WAITING"))]


def test_a_match_that_crossed_a_pairing_is_talking(h):
    a, b = h.register(0, 10), h.register(1, 20)
    h.handle(0, m.Match(a, 10))
    h.handle(1, m.Connect(b, a, 20))  # pairs with the waiting client
    assert h.handle(0, m.Cancel(a, 10)) == [(0, answer(10, f"ERROR TALKING {b}"))]
    assert h.handle(0, m.Match(a, 10)) == [(0, answer(10, f"ERROR TALKING {b}"))]


def test_a_waiting_client_that_leaves_or_dies_leaves_the_line(h):
    a, b, c = h.register(0, 10), h.register(1, 20), h.register(1, 21)
    h.handle(0, m.Match(a, 10))
    h.handle(0, m.Drop(a, 10))
    assert h.handle(1, m.Match(b, 20)) == [(1, answer(20, "WAITING"))]
    h.mm.worker_gone(1)
    h.log.clear()
    assert h.mm.table.line() == []
    assert c not in h.mm.table


def test_match_is_never_with_itself_nor_twice_in_the_line(h):
    a = h.register(0, 10)
    h.handle(0, m.Match(a, 10))
    h.handle(0, m.Match(a, 10))
    assert h.mm.table.line() == [a]


def test_requests_of_a_client_that_lost_its_id_are_not_answered(h):
    a = h.register(0, 10)
    assert h.handle(0, m.Match(a, 99)) == []  # not the holder
    assert h.handle(0, m.Name(a, 99, "x")) == []
    assert h.handle(0, m.Cancel(a, 99)) == []
    assert h.mm.table.line() == [] and h.mm.table.named("x") is None


def test_name_and_connect_by_name(h):
    a, b = h.register(0, 10), h.register(1, 20)
    assert h.handle(0, m.Name(a, 10, "Ann")) == [(0, answer(10, "NAMED Ann"))]
    assert h.handle(1, m.Name(b, 20, "ANN")) == [(1, answer(20, "ERROR NAME_TAKEN ANN"))]
    assert h.handle(1, m.Connect(b, 0, 20, 0, "bo")) == [(1, answer(20, "ERROR OFFLINE bo"))]
    assert h.handle(1, m.Get(b, False, 20)) == [(1, answer(20, f"CLIENTS {a}=FREE=Ann {b}=FREE"))]
    assert h.handle(1, m.Connect(b, 0, 20, 0, "ann")) == [
        (0, m.Paired(10, 1, b, 1, 20, False)),
        (1, m.Paired(20, 1, a, 0, 10, True)),
    ]
    assert h.handle(0, m.Connect(a, 0, 10, 0, "ann")) == [(0, answer(10, f"ERROR TALKING {b}"))]
    assert h.handle(0, m.Name(a, 10, "")) == [(0, answer(10, "NAMED"))]
    h.handle(0, m.Name(a, 10, "cy"))
    h.handle(0, m.Drop(a, 10))
    assert h.mm.table.named("cy") is None


def test_connect_by_name_is_offline_to_a_newcomer_after_the_request():
    clock = Clock(100)
    h = Harness(clock=clock)
    a = h.register(0, 10)
    clock.now = 300
    b = h.register(1, 20)
    h.handle(1, m.Name(b, 20, "bo"))
    assert h.handle(0, m.Connect(a, 0, 10, 200, "bo")) == [(0, answer(10, f"ERROR OFFLINE {b}"))]


def test_restore_keeps_the_line_in_order_and_the_names():
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1)._replace(waiting=50, name="Ann"), state(11, 2)), ()),
            1: m.Hello((state(20, 3)._replace(waiting=40, new=True),), ()),
        }
    )
    assert h.mm.table.line() == [3, 1]  # 3 waited since 40, 1 since 50
    assert h.mm.table.asked_new(3) and h.mm.table.named("ann") == 1
    assert h.handle(0, m.Match(2, 11)) == [
        (1, m.Paired(20, 1, 2, 0, 11, False)),
        (0, m.Paired(11, 1, 3, 1, 20, True)),
    ]


def test_restore_answers_an_open_match_with_the_session_it_formed():
    """The old matchmaker paired 2 (its MATCH) with 1, which waited; only 1 heard it."""
    h = Harness()
    h.mm.restore(
        {
            0: m.Hello((state(10, 1, 7, 2),), ()),
            1: m.Hello((state(20, 2),), (m.Match(2, 20, 5),)),
        }
    )
    assert h.log == [(1, m.Paired(20, 7, 1, 0, 10, True))]  # answers 2's MATCH
    assert h.mm.table.line() == []


def test_restore_takes_match_new_partners_only_from_the_same_session():
    """1 and 2 just ended session 7; 3 holds the id of a client 4 left, in session 5."""
    h = Harness()
    one, four = state(10, 1, 0, 0, 7), state(11, 4, 0, 0, 5)
    two, three = state(20, 2, 0, 0, 7), state(21, 3, 0, 0, 6)
    h.mm.restore(
        {
            0: m.Hello((one._replace(last_peer=2), four._replace(last_peer=3)), ()),
            1: m.Hello((two._replace(last_peer=1), three), ()),
        }
    )
    assert h.mm.table.get(1).last_peer == (2, 0) and h.mm.table.get(2).last_peer == (1, 0)
    assert h.mm.table.get(4).last_peer is None
