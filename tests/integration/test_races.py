"""Two races between clients, looped until they would show on a server without the rules.

An id that changes hands: ``a`` asks for ``t`` just as ``t`` leaves, and a newcomer
is given ``t``'s id; ``a`` must never be paired with the newcomer, which got the id
after ``a``'s request was read. Crossed ``CONNECT``s: ``a`` and ``b`` ask for each
other at once; ``b``'s, read after ``a``'s paired them, must be answered
``ERROR TALKING``, never reach ``a`` as chat. docs/PROTOCOL.md, "Ordering".

Sockets are TCP_NODELAY, so that two lines sent "at once" leave at once.
"""

from __future__ import annotations

import socket

import pytest

from tests.integration.harness import Client, LegacyClient, Server, two_clients
from tests.integration.test_invariants import drain_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: Rounds of each race (500 take 1 to 3 s). Without the rule, ``a`` was paired with
#: the newcomer in 14 to 73 rounds of 500 with ``--migrate on`` (nearly all of them
#: rounds with ``a`` on one of the two workers), and in none with ``--migrate off``.
ROUNDS = 500


def nodelay(client: Client) -> Client:
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def gone(server: Server, *clients: Client) -> None:
    """Each of ``clients`` has had its BYE: its socket closes, and it is forgotten here."""
    for client in clients:
        client.expect_closed()
        server.opened.remove(client)
        client.close()


# ---- an id that changes hands ------------------------------------------------------------


def newcomer_race(server: Server, r: int) -> bool:
    """Round ``r``, from scratch: ``a`` asks for ``t`` as ``t`` leaves, then a newcomer comes.

    Ids 1 and 2 for ``a`` and ``t``, on different workers (round robin); the newcomer
    gets ``t``'s id and lands on ``a``'s worker. Three connections a round, so ``a`` is
    on each worker every other round; which of ``a`` and ``t`` sends first changes every
    two rounds. Returns whether ``a`` was paired with the newcomer.
    """
    a, t = nodelay(server.client()), nodelay(server.client())
    if r == 0:
        assert server.worker_of(a) != server.worker_of(t)
    if r // 2 % 2:
        t.send("#CLOSE#")
        a.send(f"CONNECT {t.id}")
    else:
        a.send(f"CONNECT {t.id}")
        t.send("#CLOSE#")
    assert drain_until(t, "BYE") in ([], [f"CONNECTED {a.id}"])  # paired before it left
    newcomer = nodelay(server.client())
    assert newcomer.id == t.id  # the smallest free id
    answer = a.line()
    assert answer in (f"CONNECTED {t.id}", f"ERROR OFFLINE {t.id}")
    newcomer.send("#CLOSE#")
    stranger = drain_until(newcomer, "BYE")
    assert stranger in ([], [f"CONNECTED {a.id}"])
    if answer.startswith("CONNECTED"):
        a.expect(f"ENDED {t.id}")  # t left, or the newcomer did
    a.send("#CLOSE#")
    a.expect("BYE")
    gone(server, a, t, newcomer)
    return bool(stranger)


@pytest.mark.parametrize("migrate", ["on", "off"])
def test_a_connect_never_reaches_a_newcomer_given_its_targets_id(start_server, migrate):
    """``a``'s CONNECT was read before the newcomer had the id: it gets ``CONNECTED``
    with ``t`` (paired before ``t`` left, then ``ENDED``) or ``ERROR OFFLINE``."""
    server = start_server("--migrate", migrate)
    strangers = [r for r in range(ROUNDS) if newcomer_race(server, r)]
    assert not strangers, f"a was paired with the newcomer in rounds {strangers}"


# ---- crossed CONNECTs ----------------------------------------------------------------------


def crossed_round(a: Client, b: Client, late: bool) -> list[str]:
    """``a`` and ``b`` ask for each other; returns what either got besides CONNECTED.

    At once, or (``late``) ``b`` once ``a`` has read its ``CONNECTED``: ``b`` has not
    read its own yet, so its CONNECT crosses it for sure. Each sends ``sync`` right
    after its CONNECT, and once both have read the other's, ``a`` ends the session:
    ``ENDED`` comes after anything the race still owes either of them.
    """
    a.send(f"CONNECT {b.id}\nsync")
    if late:
        a.expect(f"CONNECTED {b.id}")
    b.send(f"CONNECT {a.id}\nsync")
    if not late:
        a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")
    extra = drain_until(a, "MSG sync") + drain_until(b, "MSG sync")
    a.send("#GOODBYE#")
    return extra + drain_until(a, f"ENDED {b.id}") + drain_until(b, f"ENDED {a.id}")


def test_a_crossed_connect_is_answered_talking_and_never_relayed(start_server, placement):
    """Whichever CONNECT comes second gets ``ERROR TALKING``; neither reaches the other
    end as ``MSG CONNECT``, even when read after the session started. (Without the
    rule, ``a`` got ``MSG CONNECT`` in 227 to 250 of the 250 late rounds, and in 0 to 2
    of the 250 rounds at once.)"""
    server = start_server()
    a, b = (nodelay(c) for c in two_clients(server, placement))
    for r in range(ROUNDS):
        late = r % 2 == 1
        extra = crossed_round(a, b, late)
        if late:
            assert extra == [f"ERROR TALKING {a.id}"], (r, extra)
        else:
            assert extra in ([f"ERROR TALKING {b.id}"], [f"ERROR TALKING {a.id}"]), (r, extra)


def test_a_legacy_clients_crossed_connect_is_answered_connect_talk(start_server):
    """The original client's words for it: ``CONNECT TALK``, never ``SEND CONNECT``."""
    server = start_server("--legacy-port", "0")
    a = nodelay(server.client())
    old = LegacyClient(server.host, server.legacy_port)
    old.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.opened.append(old)  # type: ignore[arg-type]
    old.send("PING")
    old.expect("SEND PONG")  # answered once it has its id: lines wait for it
    old_id = a.id + 1
    for _ in range(20):
        a.send(f"CONNECT {old_id}")
        a.expect(f"CONNECTED {old_id}")
        old.send(f"CONNECT {a.id}")  # before it read its CONNECT SUCCESS%
        old.send("sync")
        old.expect(f"CONNECT SUCCESS% {a.id}")
        old.expect("CONNECT TALK")
        a.expect("MSG sync")
        a.send("#GOODBYE#")
        a.expect(f"ENDED {old_id}")
        old.expect("TERMINATED")
