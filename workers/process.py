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
from typing import Any

from ipc.channel import Link, Receiver, Sender
from ipc.fdpass import recv_fd
from ipc.load import WorkerLoad
from matchmaker.config import Config
from matchmaker.proc import child_setup
from workers.hub import Hub

log = logging.getLogger("workers.process")

#: How often a worker checks that its supervisor is still alive.
ORPHAN_CHECK = 1.0


def main(
    index: int,
    config: Config,
    handoff: socket.socket,
    pool: list[Link],
    current: Any,
    load: WorkerLoad,
) -> None:
    """Run worker ``index`` (0-based; titled ``worker index+1``) until told to stop.

    ``pool`` is this slot's links; ``current[index]`` says which one is in use.
    """
    parent = child_setup(f"worker {index + 1}", config.log_level)
    asyncio.run(serve(index, config, handoff, pool[current[index]], load, parent))


async def serve(
    index: int, config: Config, handoff: socket.socket, link: Link, load: WorkerLoad, parent: int
) -> None:
    loop = asyncio.get_running_loop()
    inbox = Receiver(link.down)
    outbox = Sender(link.up, schedule=loop.call_soon)

    def count(n: int) -> None:
        load.live[index] = n

    hub = Hub(index, config, loop, outbox, count)
    handoff.setblocking(False)

    def on_handoff() -> None:
        while True:
            try:
                fd = recv_fd(handoff)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("hand-off channel failed: %s", exc)
                loop.remove_reader(handoff.fileno())
                return
            if fd is None:
                loop.remove_reader(handoff.fileno())
                return
            load.received[index] += 1
            hub.adopt(socket.socket(fileno=fd))

    loop.add_reader(handoff.fileno(), on_handoff)
    loop.add_reader(inbox.fileno(), lambda: hub.from_matchmaker(inbox.drain()))
    hub.sweep_idle()
    load.up[index] = 1
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), ORPHAN_CHECK)
        except TimeoutError:
            pass
    loop.remove_reader(inbox.fileno())
    hub.stopping = True
    on_handoff()  # sockets accepted but not yet picked up get OUTAGE too
    loop.remove_reader(handoff.fileno())
    # half the shutdown budget: the supervisor still has to stop the matchmaker
    await hub.shutdown(min(config.linger, config.shutdown_timeout / 2))
    outbox.close()
