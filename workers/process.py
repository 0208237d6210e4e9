"""Entry point of a worker process: one event loop, its hub, and two inputs.

The loop waits on the hand-off socket (new clients from the acceptor), the
matchmaker's queue (decisions and relayed lines) and the client sockets. It
stops on SIGTERM from the supervisor, or when the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any, NamedTuple

from ipc import messages as m
from ipc.channel import Link, Receiver, Sender
from ipc.load import BEAT_INTERVAL, WorkerLoad
from matchmaker.config import Config
from matchmaker.proc import child_setup
from matchmaker.roles import Spawn
from workers.handoff import Handoffs
from workers.hub import Hub
from workers.migrate import Mover

log = logging.getLogger("workers.process")

#: How often a worker checks that its supervisor is still alive.
ORPHAN_CHECK = 1.0


def main(spawn: Spawn) -> None:
    """Run worker ``spawn.slot`` (0-based; titled ``worker slot+1``) until told to stop.

    ``spawn.pool`` is this slot's links; ``spawn.current[slot]`` says which one is in use.
    """
    config = spawn.config
    parent = child_setup(spawn.title, config.log_level)
    assert spawn.move_inbox is not None
    moves = Moves(spawn.move_inbox, spawn.move_outboxes)
    handoff, pool, current = spawn.handoffs[0], spawn.pool, spawn.current
    run = serve(spawn.slot, config, handoff, pool, current, spawn.load, parent, moves)
    if config.loop == "uvloop":
        import uvloop

        uvloop.run(run)
    else:
        asyncio.run(run)


class Moves(NamedTuple):
    """This worker's inbox for moved clients, and every worker's sending end (``migrate``)."""

    inbox: socket.socket
    outboxes: list[socket.socket]


class MatchmakerLink:
    """This worker's end of its link, moved to a fresh one when the matchmaker restarts.

    Every link starts with a hello: what this worker holds and what its clients
    are waiting for, and the lines a dead matchmaker may have lost.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, hub: Hub, pool: list[Link], current: Any
    ) -> None:
        self.loop, self.hub, self.pool, self.current = loop, hub, pool, current
        self.using = -1
        self.inbox: Receiver | None = None

    def check(self) -> None:
        """On SIGUSR1 (and at start): follow the supervisor to the slot's current link."""
        index = self.current[self.hub.index]
        if index == self.using:
            return
        link = self.pool[index]
        old = self.inbox
        if old is not None:
            log.warning("matchmaker restarted; moving to a fresh link")
            self.loop.remove_reader(old.fileno())
            self.inbox = None  # a read of it the loop had already queued finds nothing
            # What the dead matchmaker wrote whole are decisions it made (a WELCOME,
            # an ENDED): take them in before the hello, so that the hello says what
            # came of them. What they make us send goes to the dead link: the hello
            # carries every open request and unconfirmed line again.
            self.hub.from_matchmaker(old.drain(), last_words=True)
            self.hub.outbox.abandon()
            for client in self.hub.clients.values():
                client.swallow = 0  # answers owed by the old matchmaker will never come

            # Clients other workers moved here and the dead matchmaker knew of: taken
            # in now, they are in the hello, and the new one keeps their ids for them.
            if self.hub.mover is not None:
                self.hub.mover.receive()

        # a fresh sender even at start: the link may have moved since serve() looked
        self.hub.outbox = Sender(link.up, self.loop, m.to_wire)
        self.using = index
        inbox = self.inbox = Receiver(link.down, m.from_wire)
        self.loop.add_reader(inbox.fileno(), self.read, inbox)
        self.hub.to_matchmaker(self.hub.hello())

    def read(self, inbox: Receiver) -> None:
        if inbox is self.inbox:  # not a link left behind
            self.hub.from_matchmaker(inbox.drain())

    def close(self) -> None:
        if self.inbox is not None:
            self.loop.remove_reader(self.inbox.fileno())
        self.hub.outbox.close()


def beat(loop: asyncio.AbstractEventLoop, load: WorkerLoad, index: int) -> None:
    """Tell the supervisor and the acceptor this loop runs; again in ``BEAT_INTERVAL``.

    A timer on the loop itself, never a thread: a thread would go on beating
    while the loop is stuck (gunicorn's workers notify from their own loop too).
    """
    load.beat[index] = time.monotonic()
    loop.call_later(BEAT_INTERVAL, beat, loop, load, index)


async def serve(
    index: int,
    config: Config,
    handoff: socket.socket,
    pool: list[Link],
    current: Any,
    load: WorkerLoad,
    parent: int,
    moves: Moves,
) -> None:
    loop = asyncio.get_running_loop()

    def count(n: int) -> None:
        load.live[index] = n

    hub = Hub(index, config, loop, Sender(pool[current[index]].up), count)
    link = MatchmakerLink(loop, hub, pool, current)
    link.check()
    loop.add_signal_handler(signal.SIGUSR1, link.check)

    def counted() -> None:
        load.received[index] += 1

    handoffs = Handoffs(handoff, hub.adopt, counted)

    def on_handoff() -> None:
        if not handoffs.read():
            loop.remove_reader(handoff.fileno())

    loop.add_reader(handoff.fileno(), on_handoff)
    mover = hub.mover = Mover(hub, moves.inbox, moves.outboxes)
    loop.add_reader(moves.inbox.fileno(), mover.receive)
    hub.sweep()
    beat(loop, load, index)
    load.up[index] = 1
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), ORPHAN_CHECK)
        except TimeoutError:
            pass
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already; the group's copy may follow
    hub.stopping = True
    handoffs.read(limit=None)  # sockets accepted but not yet picked up get OUTAGE too
    loop.remove_reader(handoff.fileno())
    # half the shutdown budget: the supervisor still has to stop the matchmaker
    await hub.shutdown(min(config.linger, config.shutdown_timeout / 2))
    # clients other workers moved here meanwhile get OUTAGE too (Hub.arrive)
    loop.remove_reader(moves.inbox.fileno())
    mover.receive()
    link.close()
