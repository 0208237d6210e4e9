"""MATCH, CANCEL and NAME against the real server: exact lines, across workers, races.

Clients are placed round robin, so consecutive clients are on different workers
on purpose: a MATCH pairs across workers, and a waiting client moves (or is
relayed) like any other. docs/PROTOCOL.md, "Client to server".
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time

import pytest

from tests.integration.harness import TIMEOUT, Client, Server, pair
from tests.integration.test_legacy import legacy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def nodelay(client: Client) -> Client:
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def chat(a: Client, b: Client) -> None:
    a.send(f"hello {b.id}")
    b.expect(f"MSG hello {b.id}")
    b.send(f"hello {a.id}")
    a.expect(f"MSG hello {a.id}")


def test_match_waits_then_pairs_with_the_next_asker_on_another_worker(server):
    a, b, c = server.client(), server.client(), server.client()
    assert server.worker_of(a) != server.worker_of(b)
    a.send("MATCH")
    a.expect("WAITING")
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=WAITING {b.id}=FREE {c.id}=FREE")
    c.send("GET FREE")
    c.expect(f"CLIENTS {b.id}=FREE {c.id}=FREE")
    a.send("GET")  # a waiting client is FREE: commands work
    a.expect(f"CLIENTS {a.id}=WAITING {b.id}=FREE {c.id}=FREE")
    b.send("MATCH")
    b.expect(f"CONNECTED {a.id}")
    a.expect(f"CONNECTED {b.id}")
    chat(a, b)
    c.send("MATCH")  # nobody waits any more
    c.expect("WAITING")
    a.send("#GOODBYE#")
    a.expect(f"ENDED {b.id}")
    b.expect(f"ENDED {a.id}")
    b.send("MATCH")
    b.expect(f"CONNECTED {c.id}")
    c.expect(f"CONNECTED {b.id}")
    a.quiet()


def test_match_twice_cancel_and_leaving_take_a_client_out_of_the_line(server):
    a, b, c = server.client(), server.client(), server.client()
    a.send("MATCH")
    a.expect("WAITING")
    a.send("MATCH")
    a.expect("ERROR WAITING")
    a.send("MATCH NEW")
    a.expect("ERROR WAITING")
    a.send("CANCEL")
    a.expect("CANCELLED")
    a.send("CANCEL")
    a.expect("ERROR NOT_WAITING")
    b.send("MATCH")
    b.expect("WAITING")  # a left the line
    b.send("#CLOSE#")
    b.expect("BYE")
    c.send("MATCH")
    c.expect("WAITING")  # so did b
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=FREE {c.id}=WAITING")
    a.quiet()


def test_connect_to_a_waiting_client_pairs_it_and_takes_it_out_of_the_line(server):
    a, b, c = server.client(), server.client(), server.client()
    a.send("MATCH")
    a.expect("WAITING")
    b.send(f"CONNECT {a.id}")
    b.expect(f"CONNECTED {a.id}")
    a.expect(f"CONNECTED {b.id}")
    chat(a, b)
    c.send("MATCH")
    c.expect("WAITING")


def test_match_new_skips_the_last_partner(server):
    a, b, c = server.client(), server.client(), server.client()
    pair(a, b)
    a.send("#GOODBYE#")
    a.expect(f"ENDED {b.id}")
    b.expect(f"ENDED {a.id}")
    a.send("MATCH NEW")
    a.expect("WAITING")
    b.send("MATCH")
    b.expect("WAITING")  # a asked for someone new: they wait side by side
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=WAITING {b.id}=WAITING {c.id}=FREE")
    c.send("MATCH")
    c.expect(f"CONNECTED {a.id}")  # the one that waited longest
    a.expect(f"CONNECTED {c.id}")
    b.quiet()


def test_names_in_get_and_connect_by_name(server):
    a, b, c = server.client(), server.client(), server.client()
    a.send("NAME Ann")
    a.expect("NAMED Ann")
    b.send("NAME aNN")  # another worker, another case: the same name
    b.expect("ERROR NAME_TAKEN aNN")
    b.send("NAME 42")
    b.expect("ERROR USAGE NAME [<name>]")
    b.send("NAME bo_2")
    b.expect("NAMED bo_2")
    c.send("GET")
    c.expect(f"CLIENTS {a.id}=FREE=Ann {b.id}=FREE=bo_2 {c.id}=FREE")
    c.send("CONNECT ann")
    c.expect(f"CONNECTED {a.id}")  # sessions keep the ids
    a.expect(f"CONNECTED {c.id}")
    b.send("GET")
    b.expect(f"CLIENTS {a.id}=BUSY=Ann {b.id}=FREE=bo_2 {c.id}=BUSY")
    b.send("CONNECT Ann")
    b.expect(f"ERROR BUSY {a.id}")
    b.send("CONNECT nobody")
    b.expect("ERROR OFFLINE nobody")
    b.send("CONNECT bo_2")
    b.expect("ERROR SELF")
    c.send("#CLOSE#")
    c.expect("BYE")
    a.expect(f"ENDED {c.id}")
    a.send("#CLOSE#")
    a.expect("BYE")
    b.send("NAME ANN")  # freed with its holder
    b.expect("NAMED ANN")
    b.send("NAME")
    b.expect("NAMED")
    b.send("GET")
    b.expect(f"CLIENTS {b.id}=FREE")


def match_all(clients: list[Client]) -> tuple[dict[int, int], int]:
    """Every client sends MATCH at once (an odd number of them): who each was paired
    with, mutually and never with itself, and the one left waiting."""
    for c in clients:
        c.send("MATCH")
    peers: dict[int, int] = {}
    rest = []
    for c in clients:
        first = c.line()
        if first == "WAITING":
            rest.append(c)
            continue
        word, _, peer = first.partition(" ")
        assert word == "CONNECTED", first
        peers[c.id] = int(peer)
    # The ones that waited are paired by a later MATCH, all but one (any of them): take
    # each one's line as it comes rather than in order, or we would wait on the last.
    deadline = time.monotonic() + TIMEOUT
    while len(peers) < len(clients) - 1:
        ready = [c for c in rest if b"\n" in c.buf]
        if not ready:
            socks, _, _ = select.select([c.sock for c in rest], [], [], deadline - time.monotonic())
            assert socks, f"{len(clients) - 1 - len(peers)} waiting clients were never paired"
            ready = [c for c in rest if c.sock in socks]
        for c in ready:
            word, _, peer = c.line().partition(" ")
            assert word == "CONNECTED"
            peers[c.id] = int(peer)
            rest.remove(c)
    assert all(peers[peers[cid]] == cid and peers[cid] != cid for cid in peers)
    (left,) = {c.id for c in clients} - set(peers)
    return peers, left


def test_200_clients_matching_at_once_across_workers_pair_exactly_once(start_server):
    """201 clients on 3 workers send MATCH at once: 100 pairs, each CONNECTED to the
    other, and one left waiting."""
    server = start_server(workers=3)
    clients = [server.client() for _ in range(201)]
    by_id = {c.id: c for c in clients}
    peers, left = match_all(clients)
    assert len(peers) == 200
    by_id[left].quiet()  # nothing more came for it
    by_id[left].send("GET")
    listed = by_id[left].line().split()[1:]
    assert listed == [f"{cid}={'WAITING' if cid == left else 'BUSY'}" for cid in sorted(by_id)]


def test_the_line_and_the_names_survive_a_matchmaker_kill(server):
    a, b, c, d = server.client(), server.client(), server.client(), server.client()
    a.send("NAME ann")
    a.expect("NAMED ann")
    pair(b, d)
    b.send("#GOODBYE#")
    b.expect(f"ENDED {d.id}")
    d.expect(f"ENDED {b.id}")
    d.send("MATCH")
    d.expect("WAITING")
    b.send("MATCH NEW")
    b.expect("WAITING")  # not with d, its last partner: behind d
    old = server.pid_of("matchmaker")
    os.kill(old, signal.SIGKILL)
    c.send("GET")  # answered by the next matchmaker, from the workers' hellos
    c.expect(f"CLIENTS {a.id}=FREE=ann {b.id}=WAITING {c.id}=FREE {d.id}=WAITING")
    assert server.pid_of("matchmaker") != old
    c.send("NAME ANN")
    c.expect("ERROR NAME_TAKEN ANN")
    a.send("MATCH")  # d waited longest
    a.expect(f"CONNECTED {d.id}")
    d.expect(f"CONNECTED {a.id}")
    c.send("MATCH")
    c.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {c.id}")


def test_a_waiting_client_closing_as_it_is_matched_is_never_a_ghost_partner(server):
    """``w`` waits and closes just as ``m`` (on the other worker) asks MATCH: ``m`` either
    waits, or is paired with ``w`` and then hears ENDED; never anything else."""
    paired = 0
    for r in range(40):
        w, mm = nodelay(server.client()), nodelay(server.client())
        w.send("MATCH")
        w.expect("WAITING")
        if r % 2:
            w.send("#CLOSE#")
            mm.send("MATCH")
        else:
            mm.send("MATCH")
            w.send("#CLOSE#")
        first = mm.line()
        if first == "WAITING":
            mm.send("CANCEL")
            mm.expect("CANCELLED")
        else:
            assert first == f"CONNECTED {w.id}", first
            mm.expect(f"ENDED {w.id}")
            paired += 1
        for c in (w, mm):
            if c is mm:
                c.send("#CLOSE#")
            c.line()  # BYE, or (w) CONNECTED before it
            server.opened.remove(c)
            c.close()
    assert server.log().count("Traceback") == 0


def test_a_connect_and_a_match_for_one_waiting_client_at_once_pair_it_once(server):
    """``w`` waits; ``m`` asks MATCH and ``c`` asks CONNECT w at once, from both workers:
    exactly one of them gets ``w``; the other waits, or hears BUSY."""
    for r in range(30):
        w, mm, c = (nodelay(server.client()) for _ in range(3))
        w.send("MATCH")
        w.expect("WAITING")
        first, second = (mm, c) if r % 2 else (c, mm)
        for who in (first, second):
            who.send("MATCH" if who is mm else f"CONNECT {w.id}")
        got_m, got_c = mm.line(), c.line()
        partner = w.line()
        if partner == f"CONNECTED {mm.id}":
            assert (got_m, got_c) == (f"CONNECTED {w.id}", f"ERROR BUSY {w.id}")
        else:
            assert partner == f"CONNECTED {c.id}"
            assert (got_m, got_c) == ("WAITING", f"CONNECTED {w.id}")
        for who in (w, mm, c):
            who.send("#CLOSE#")
        for who in (w, mm, c):
            while who.line() != "BYE":
                pass
            server.opened.remove(who)
            who.close()


@pytest.fixture
def legacy_server(start_server) -> Server:
    return start_server("--legacy-port", "0")


def test_a_legacy_client_matches_in_words_it_knows(legacy_server):
    server = legacy_server
    probe = server.client()
    old, old_id = legacy(server, probe)
    old.send("NAME ann")
    old.expect("INVALID COMMAND")  # the original client has no names
    old.send("MATCH")
    old.expect("SEND WAITING")  # printed as it is: (Friend): WAITING
    probe.send("GET")
    probe.expect(f"CLIENTS {probe.id}=FREE {old_id}=WAITING")
    old.send("GET")
    old.expect("GET -1 0 0 ")  # waiting is FREE to the original client
    probe.send("MATCH")
    probe.expect(f"CONNECTED {old_id}")
    old.expect(f"CONNECT SUCCESS% {probe.id}")  # as when someone connects to it
    probe.send("#GOODBYE#")
    probe.expect(f"ENDED {old_id}")
    old.expect("TERMINATED")
    probe.send("MATCH")
    probe.expect("WAITING")
    old.send("MATCH")
    old.expect(f"CONNECT SUCCESS {probe.id}")  # as after its own CONNECT
    probe.expect(f"CONNECTED {old_id}")
    old.send("hi")
    probe.expect("MSG hi")
    old.send("#GOODBYE#")
    old.expect("TERMINATED")
    probe.expect(f"ENDED {old_id}")
    old.send("CANCEL")
    old.expect("INVALID COMMAND")
    old.send("MATCH")
    old.expect("SEND WAITING")  # printed as it is: (Friend): WAITING
    old.send("MATCH")
    old.expect("INVALID COMMAND")
    old.send("CANCEL")
    old.expect("SEND CANCELLED")
