"""workers.migrate.Mover: what arrives becomes clients, and what cannot still frees its ids."""

from __future__ import annotations

import os
import pickle
import resource
import socket

from ipc import messages as m
from ipc.fdpass import move_pair, send_move
from workers.migrate import Mover
from workers.moving import Moving


def moving(session: int, cid: int, request: m.ToMatchmakerRequest | None = None) -> Moving:
    return Moving(session, cid, request, (), None, 0.0, b"", 0)


class FakeHub:
    index = 1

    def __init__(self):
        self.told = []
        self.arrived = []

    def to_matchmaker(self, message):
        self.told.append(message)

    def arrive(self, sock, state):
        self.arrived.append((state.session, state.cid))
        sock.close()


def test_moved_clients_arrive_with_their_sessions():
    inbox, out = move_pair()
    clients = [socket.socket() for _ in range(3)]
    states = [moving(7 + i, 100 + i) for i in range(3)]
    send_move(out, pickle.dumps(states), [c.fileno() for c in clients])
    hub = FakeHub()
    Mover(hub, inbox, [out]).receive()
    assert hub.arrived == [(7, 100), (8, 101), (9, 102)]
    assert hub.told == []
    for s in (inbox, out, *clients):
        s.close()


def test_sockets_cut_off_by_the_descriptor_limit_release_every_id():
    """A receiver at its fd limit gets some of the sockets (MSG_CTRUNC): all ids are dropped."""
    inbox, out = move_pair()
    clients = [socket.socket() for _ in range(3)]
    states = [moving(7, 100 + i) for i in range(3)]
    send_move(out, pickle.dumps(states), [c.fileno() for c in clients])
    hub = FakeHub()
    mover = Mover(hub, inbox, [out])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe + 1, hard))  # room for one more
    try:
        mover.receive()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert hub.arrived == []
    assert hub.told == [m.Lost(100, 7), m.Lost(101, 7), m.Lost(102, 7)]
    for s in (inbox, out, *clients):
        s.close()


def test_a_client_arriving_at_a_stopping_worker_gets_outage_at_once():
    import asyncio

    from matchmaker.config import Config
    from workers.hub import Hub

    loop = asyncio.new_event_loop()
    try:
        hub = Hub(0, Config(), loop, outbox=None)  # type: ignore[arg-type]
        hub.stopping = True
        ours, theirs = socket.socketpair()
        hub.arrive(ours, moving(7, 100))
        theirs.settimeout(5)
        assert theirs.recv(100) == b"OUTAGE\n"
        assert theirs.recv(100) == b""  # and closed
        assert hub.clients == {} and hub.arriving == {}
        theirs.close()
    finally:
        loop.close()


def test_an_arriving_client_takes_its_request_along_under_its_new_key():
    """The matchmaker answers a request only to the key that holds the id: the CONNECT a
    client moved with must name its key on the new worker, or it would never be answered
    (a restarted matchmaker hears it in the hello)."""
    import asyncio

    from matchmaker.config import Config
    from workers.hub import Hub
    from workers.protocol import ClientProtocol

    loop = asyncio.new_event_loop()
    try:
        hub = Hub(0, Config(), loop, outbox=None)  # type: ignore[arg-type]
        client = ClientProtocol.arriving(hub, 7, moving(9, 100, m.Connect(100, 3, 41)))
        assert client.request == m.Connect(100, 3, 7)
        assert client.pending
        idle = ClientProtocol.arriving(hub, 8, moving(9, 101))
        assert idle.request is None and not idle.pending
    finally:
        loop.close()


def test_a_client_crosses_whole_lines_bytes_and_output_in_one_record():
    """export -> pickle -> arriving: lines decoded and not handled, bytes not decoded, output
    not written and the request all arrive, in order, under the new key."""
    import asyncio

    from matchmaker.config import Config
    from workers.hub import Hub
    from workers.protocol import ClientProtocol

    loop = asyncio.new_event_loop()
    try:
        hub = Hub(0, Config(), loop, outbox=None)  # type: ignore[arg-type]
        client = ClientProtocol(hub, 3)
        client.cid, client.request, client.last_session = 100, m.Connect(100, 5, 3), 4
        client.decoder.receive(b"one\ntwo\nthr")
        client.ready.append(client.decoder.take(1)[0])  # "one" decoded, "two" not yet
        client.out += b"ERROR SELF\n"
        state = pickle.loads(pickle.dumps(client.export(9)))
        assert isinstance(state, Moving)
        assert (state.session, state.cid, state.ready, state.out) == (
            9,
            100,
            ("one",),
            b"ERROR SELF\n",
        )
        there = ClientProtocol.arriving(hub, 8, state)
        assert there.request == m.Connect(100, 5, 8) and there.pending
        assert list(there.ready) == ["one"]
        assert there.decoder.take(5) == ["two"]
        there.decoder.receive(b"ee\n")
        assert there.decoder.take(5) == ["three"]
        assert bytes(there.out) == b"ERROR SELF\n" and there.last_session == 4
    finally:
        loop.close()


def test_a_client_keeps_when_it_got_its_id_wherever_it_goes():
    """A CONNECT names the holder its target had when it was read: the stamp each client
    got with its id goes with it to its new worker, into its Placed and into the hello a
    new matchmaker rebuilds the table from; its CONNECT keeps the moment it was read."""
    import asyncio

    from matchmaker.config import Config
    from tests.component.test_client_requests import Outbox
    from workers.hub import Hub
    from workers.protocol import ClientProtocol

    loop = asyncio.new_event_loop()
    try:
        old, new = Hub(0, Config(), loop, Outbox()), Hub(1, Config(), loop, Outbox())
        client = old.clients[3] = ClientProtocol(old, 3)
        old._welcome(m.Welcome(3, 100, 5_000))
        assert (client.cid, client.since) == (100, 5_000)
        client.request, client.pending = m.Connect(100, 5, 3, 7_000), True
        there = ClientProtocol.arriving(new, 8, pickle.loads(pickle.dumps(client.export(9))))
        assert there.since == 5_000
        assert there.request == m.Connect(100, 5, 8, 7_000)
        new._placed(there, 9)
        assert new.outbox.sent == [m.Placed(8, 100, 9, m.Connect(100, 5, 8, 7_000), 5_000)]
        state, _ = there.resend()
        assert state is not None and state.since == 5_000
    finally:
        loop.close()
