"""Races between clients, looped until they would show on a server without the rules.

An id that changes hands: ``a`` asks for ``t`` just as ``t`` leaves, and a newcomer
is given ``t``'s id; ``a`` must never be paired with the newcomer, which got the id
after ``a``'s request was read. docs/PROTOCOL.md, "Ordering".

Sockets are TCP_NODELAY, so that two lines sent "at once" leave at once.
"""

from __future__ import annotations

import socket

import pytest

from tests.integration.harness import Client, Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: Rounds of each race (500 take 1 to 3 s). Without the rule, ``a`` was paired with
#: the newcomer in 14 to 73 rounds of 500 with ``--migrate on`` (nearly all of them
#: rounds with ``a`` on one of the two workers), and in none with ``--migrate off``.
ROUNDS = 500


def nodelay(client: Client) -> Client:
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def lines_until(client: Client, last: str) -> list[str]:
    """The lines before ``last``; ``last`` is read too."""
    lines = []
    while (line := client.line()) != last:
        lines.append(line)
    return lines


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
    assert lines_until(t, "BYE") in ([], [f"CONNECTED {a.id}"])  # paired before it left
    newcomer = nodelay(server.client())
    assert newcomer.id == t.id  # the smallest free id
    answer = a.line()
    assert answer in (f"CONNECTED {t.id}", f"ERROR OFFLINE {t.id}")
    newcomer.send("#CLOSE#")
    stranger = lines_until(newcomer, "BYE")
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
