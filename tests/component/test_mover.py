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
