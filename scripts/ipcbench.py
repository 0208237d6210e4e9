"""Pipe or Queue: two public ways of ``multiprocessing`` between a worker and the matchmaker.

``python -m scripts.ipcbench`` runs each between this process (the
matchmaker's side: a blocking wait, as ``matchmaker.service`` does) and a
spawned child (a worker's side, in an asyncio event loop, as ``workers``
do), with the messages the server sends: small tuples, batched.

- ``pipe``: ``ipc.channel`` (two ``Pipe(duplex=False)``, ``Connection.send_bytes``
  from the caller's thread, the child's loop watching the pipe).
- ``queue``: two ``multiprocessing.Queue``; ``put`` hands the batch to the
  queue's feeder thread. A queue has no public descriptor to watch, so the
  child takes batches with ``get`` in a thread and passes them to its loop
  (``call_soon_threadsafe``): what a worker would have to do.

Two workloads: round trips of one batch (latency: a request and its answer),
and a stream of batches one way (throughput). CPU is both processes' own,
threads included, per message.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import select
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from ipc.channel import Ends, Receiver, Sender, link

CTX = multiprocessing.get_context("spawn")

#: What a relayed line looks like on a link (``ipc.messages.to_wire``).
MESSAGE = ("Deliver", 17, 4242, "x" * 64, 1234)


# ---- the child: echoes round trips, counts streams, in an event loop --------------


def child_pipe(ends: Ends, report: Connection) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        receiver = Receiver(ends.inbox)
        sender = Sender(ends.outbox, loop)

        def on_read() -> None:
            for batch in receiver.drain():
                if not handle(batch, sender.send, done):
                    loop.remove_reader(receiver.fileno())

        loop.add_reader(receiver.fileno(), on_read)
        await done
        sender.close()

    asyncio.run(serve())
    report.send(time.process_time() - cpu_at_start[0])


def child_queue(inbox: Any, outbox: Any, report: Connection) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_batch(batch: list[Any]) -> None:
            handle(batch, outbox.put, done, batched=True)

        def take() -> None:
            while True:
                batch = inbox.get()
                loop.call_soon_threadsafe(on_batch, batch)
                if batch == ["stop"]:
                    return

        threading.Thread(target=take, daemon=True).start()
        await done

    asyncio.run(serve())
    outbox.close()
    outbox.join_thread()
    report.send(time.process_time() - cpu_at_start[0])


#: Messages counted in the stream workload, and the child's CPU time at its first batch.
counted = [0]
cpu_at_start = [0.0]


def handle(batch: list[Any], send: Any, done: asyncio.Future[None], batched: bool = False) -> bool:
    """Echo a round trip's batch, count a stream's; False (and ``done``) on ``["stop"]``."""
    if not cpu_at_start[0]:
        cpu_at_start[0] = time.process_time()
    if batch == ["stop"]:
        send(counted[0] if not batched else [counted[0]])
        done.set_result(None)
        return False
    if batch[0] == "stream":
        counted[0] += len(batch) - 1
    elif batched:
        send(batch)
    else:
        for message in batch:
            send(message)
    return True


# ---- this side: a blocking wait, as the matchmaker's loop -------------------------


class PipeSide:
    def __init__(self) -> None:
        mine, theirs = link()
        self.report, child_report = CTX.Pipe(duplex=False)
        self.child = CTX.Process(target=child_pipe, args=(theirs, child_report))
        self.child.start()
        theirs.close()
        child_report.close()
        self.sender, self.receiver = Sender(mine.outbox), Receiver(mine.inbox)

    def put(self, batch: list[Any]) -> None:
        for message in batch:
            self.sender.send(message)
        self.sender.flush()
        while self.sender.blocked:
            select.select([], [self.sender.fileno()], [])  # the pipe has room again
            self.sender.resume()

    def get(self) -> list[Any]:
        while True:
            batches = self.receiver.drain()
            if batches:
                (batch,) = batches
                return list(batch)
            wait([self.receiver.fileno()])


class QueueSide:
    def __init__(self) -> None:
        self.out, self.into = CTX.Queue(), CTX.Queue()
        self.report, child_report = CTX.Pipe(duplex=False)
        self.child = CTX.Process(target=child_queue, args=(self.out, self.into, child_report))
        self.child.start()
        child_report.close()

    def put(self, batch: list[Any]) -> None:
        self.out.put(batch)

    def get(self) -> list[Any]:
        return list(self.into.get())


def run(kind: str, workload: str, size: int, seconds: float) -> dict[str, float]:
    side = PipeSide() if kind == "pipe" else QueueSide()
    batch = [MESSAGE] * size
    try:
        side.put(["stream", MESSAGE])  # the child is up and has imported everything
        start, cpu, n = time.monotonic(), time.process_time(), 0
        if workload == "roundtrip":
            while time.monotonic() - start < seconds:
                side.put(batch)
                assert len(side.get()) == size
                n += 1
        else:
            while time.monotonic() - start < seconds:
                for _ in range(100):
                    side.put(["stream", *batch])
                n += 100
        side.put(["stop"])
        (received,) = side.get()
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu + side.report.recv()
    finally:
        side.child.join(10)
    if workload == "stream":
        assert received == n * size + 1, (received, n * size + 1)
    messages = n * size
    return {"rate": n / elapsed, "messages": messages / elapsed, "cpu_us": cpu / messages * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per row")
    parser.add_argument("--sizes", default="1,16,256", help="messages per batch")
    parser.add_argument("--workloads", default="roundtrip,stream", help="which, in order")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row, the median kept")
    args = parser.parse_args()
    head = ("workload", "batch", "kind", "batches/s", "msgs/s", "cpu us/msg")
    print("{:<10} {:>5} {:<6} {:>10} {:>11} {:>10}".format(*head))
    for workload in args.workloads.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for kind in ("pipe", "queue"):
                runs = sorted(
                    (run(kind, workload, size, args.seconds) for _ in range(args.repeat)),
                    key=lambda r: r["messages"],
                )
                r = runs[len(runs) // 2]
                print(
                    f"{workload:<10} {size:>5} {kind:<6} {r['rate']:>10,.0f} "
                    f"{r['messages']:>11,.0f} {r['cpu_us']:>10.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
