"""Entry point of a worker process: one event loop, its hub, and two inputs.

The loop waits on the hand-off socket (new clients from the acceptor), the
link from the matchmaker (decisions and relayed lines), the control socket
(a fresh link when the matchmaker was replaced) and the client sockets. It
stops on SIGTERM from the supervisor, or when the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from ipc import messages as m
from ipc.channel import Ends, Receiver, Sender, recv_ends
from ipc.counts import COUNTS
from ipc.fdpass import Dropped
from ipc.load import BEAT_INTERVAL, WorkerLoad
from matchmaker.proc import booting, child_setup, collect_less
from matchmaker.roles import Spawn
from workers.handoff import Handoffs
from workers.hub import Hub
from workers.migrate import Mover

log = logging.getLogger("workers.process")

#: How often a worker checks that its supervisor is still alive.
ORPHAN_CHECK = 1.0


def main(spawn: Spawn) -> None:
    """Run worker ``spawn.slot`` (0-based; titled ``worker slot+1``) until told to stop."""
    with booting(spawn.title):
        parent = child_setup(spawn.title, spawn.config.log_level, spawn.config.log_format)
        collect_less()  # every client is a handful of objects here
        run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
        if spawn.config.loop == "uvloop":
            import uvloop

            run = uvloop.run
    run(serve(spawn, parent))


class MatchmakerLink:
    """This worker's end of its link, moved to a fresh one when the matchmaker restarts.

    The supervisor sends the fresh link's ends over ``control``. Every link
    starts with a hello: what this worker holds and what its clients are
    waiting for, and the lines a dead matchmaker may have lost.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, hub: Hub, control: socket.socket, inbox: Connection
    ) -> None:
        self.loop, self.hub, self.control = loop, hub, control
        self.inbox = self._listen(inbox)
        control.setblocking(False)
        loop.add_reader(control.fileno(), self.fresh)

    def _listen(self, conn: Connection) -> Receiver:
        """Read ``conn`` from now on, and say hello (over the hub's outbox, already there)."""
        inbox = Receiver(conn, m.from_wire)
        self.loop.add_reader(inbox.fileno(), self.read, inbox)
        self.hub.to_matchmaker(self.hub.hello())
        return inbox

    def fresh(self) -> None:
        """The supervisor sent a fresh link (or several): the matchmaker was replaced."""
        while True:
            try:
                got = recv_ends(self.control)
            except BlockingIOError:
                return
            except Dropped as exc:  # at the descriptor limit: no way to reach a matchmaker
                log.error("could not take a fresh link to the matchmaker (%s); exiting", exc)
                raise SystemExit(1) from exc
            if got is None:  # the supervisor has gone; the orphan check ends this worker
                self.loop.remove_reader(self.control.fileno())
                return
            self.move(got[1])

    def move(self, ends: Ends) -> None:
        log.warning("matchmaker restarted; moving to a fresh link")
        old = self.inbox
        self.loop.remove_reader(old.fileno())
        # What the dead matchmaker wrote whole are decisions it made (a WELCOME,
        # an ENDED): take them in before the hello, so that the hello says what
        # came of them. What they make us send goes to the dead link: the hello
        # carries every open request and unconfirmed line again.
        self.hub.from_matchmaker(old.drain(), last_words=True)
        old.close()
        self.hub.outbox.abandon()
        self.hub.matchmaker_replaced()

        # Clients other workers moved here and the dead matchmaker knew of: taken
        # in now, they are in the hello, and the new one keeps their ids for them.
        if self.hub.mover is not None:
            self.hub.mover.receive()
        self.hub.use_outbox(Sender(ends.outbox, self.loop, m.to_wire))
        self.inbox = self._listen(ends.inbox)

    def read(self, inbox: Receiver) -> None:
        if inbox is not self.inbox:  # a link left behind: a read the loop had already queued
            return
        batches = inbox.drain()
        if inbox.closed:  # the matchmaker died: these are its last words; a fresh link follows
            self.loop.remove_reader(inbox.fileno())
        self.hub.from_matchmaker(batches, last_words=inbox.closed)

    def close(self) -> None:
        self.loop.remove_reader(self.control.fileno())
        self.loop.remove_reader(self.inbox.fileno())
        self.hub.outbox.close()


def beat(
    loop: asyncio.AbstractEventLoop, load: WorkerLoad, index: int, control: socket.socket
) -> None:
    """Tell the supervisor and the acceptor this loop runs; again in ``BEAT_INTERVAL``.

    A timer on the loop itself, never a thread: a thread would go on beating
    while the loop is stuck (gunicorn's workers notify from their own loop too).
    The counts for the metrics go with it, when they changed (``ipc.counts``).
    """
    load.beat[index] = time.monotonic()
    COUNTS.report(control)
    loop.call_later(BEAT_INTERVAL, beat, loop, load, index, control)


async def serve(spawn: Spawn, parent: int) -> None:
    with booting(spawn.title):
        loop = asyncio.get_running_loop()
        index, config, load, handoff = spawn.slot, spawn.config, spawn.load, spawn.handoffs[0]
        assert spawn.control is not None and spawn.move_inbox is not None
        (ends,) = spawn.links

        def count(n: int) -> None:
            load.live[index] = n

        outbox = Sender(ends.outbox, loop, m.to_wire)
        hub = Hub(index, config, loop, outbox, count, load.peers)
        link = MatchmakerLink(loop, hub, spawn.control, ends.inbox)

        def counted() -> None:
            load.received[index] += 1

        handoffs = Handoffs(handoff, hub.adopt, counted)

        def on_handoff() -> None:
            if not handoffs.read():
                loop.remove_reader(handoff.fileno())

        loop.add_reader(handoff.fileno(), on_handoff)
        mover = Mover(hub, spawn.move_inbox, spawn.move_outboxes)
        hub.can_move(mover)
        loop.add_reader(spawn.move_inbox.fileno(), mover.receive)
        hub.sweep()
        beat(loop, load, index, spawn.control)
        load.up[index] = 1
        COUNTS.report(spawn.control, force=True)  # the supervisor's sign that this one serves
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), ORPHAN_CHECK)
        except TimeoutError:
            pass
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already; the group's copy may follow
    hub.stop()
    handoffs.read(limit=None)  # sockets accepted but not yet picked up get OUTAGE too
    loop.remove_reader(handoff.fileno())
    # half the shutdown budget: the supervisor still has to stop the matchmaker
    await hub.shutdown(min(config.linger, config.shutdown_timeout / 2))
    # clients other workers moved here meanwhile get OUTAGE too (Hub.arrive)
    loop.remove_reader(spawn.move_inbox.fileno())
    mover.receive()
    link.close()
