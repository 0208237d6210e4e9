"""``bench.py --tls`` and ``--ws``'s load generator: pingpong and stream pairs in Python,
plain, over TLS, or over WebSocket.

The C helper of ``scripts.benchload`` drives plain sockets and speaks neither
TLS nor WebSocket, so those rows are driven from one asyncio loop here, and so
are plain rows beside them: the ratio TLS/plain (or ws/plain) compares two runs
of this same load
generator, never a Python-driven row with a C-driven one. Its own cost per
line is that of an asyncio client, so the absolute numbers are lower than the
C-driven table's; the ratio is what the rows are for. Clients are placed and
paired as in ``benchload.open_pairs`` (where each landed is read with psutil);
every line carries its pair's sequence number, checked on arrival.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request, TextMessage

from scripts import benchload

#: Bytes of the text of a chat line, as the C helper's (``MSG `` and ``\n`` around it).
TEXT = benchload.LINE_BYTES - 1


@dataclass
class End:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    cid: int
    port: int

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), benchload.REPLY_TIMEOUT)

    def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n")

    def send_lines(self, texts: list[str]) -> None:
        self.writer.write(b"".join(text.encode() + b"\n" for text in texts))


class WsEnd(End):
    """An end over a WebSocket: one text frame per line each way (wsproto, as the server)."""

    ws: WSConnection
    texts: list[bytes]

    async def upgrade(self, host: str) -> None:
        self.ws, self.texts = WSConnection(ConnectionType.CLIENT), []
        self.writer.write(self.ws.send(Request(host=host, target="/ws")))
        while not any(isinstance(e, AcceptConnection) for e in await self._events()):
            pass

    async def _events(self) -> list[object]:
        data = await asyncio.wait_for(self.reader.read(65536), benchload.REPLY_TIMEOUT)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.ws.receive_data(data)
        events: list[object] = list(self.ws.events())
        partial = b""
        for event in events:
            if isinstance(event, TextMessage):
                partial += event.data.encode()
                if event.message_finished:
                    self.texts.append(partial + b"\n")
                    partial = b""
        return events

    async def line(self) -> bytes:
        while not self.texts:
            await self._events()
        return self.texts.pop(0)

    def send(self, text: str) -> None:
        self.writer.write(self.ws.send(Message(data=text)))

    def send_lines(self, texts: list[str]) -> None:
        self.writer.write(b"".join(self.ws.send(Message(data=text)) for text in texts))


@dataclass
class Tally:
    """What a workload counted while measuring."""

    done: int = 0
    latencies: list[int] = field(default_factory=list)
    bad: int = 0  # lines lost or out of order
    measuring: bool = False


def stamp(seq: int) -> str:
    return f"{seq} {time.perf_counter_ns()}".ljust(TEXT, ".")


async def connect(host: str, port: int, tls: ssl.SSLContext | None, web: bool = False) -> End:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, server_hostname="localhost" if tls else None),
        benchload.REPLY_TIMEOUT,
    )
    end = (WsEnd if web else End)(reader, writer, 0, writer.get_extra_info("sockname")[1])
    if isinstance(end, WsEnd):
        await end.upgrade(f"{host}:{port}")
    word, _, cid = (await end.line()).decode().strip().partition(" ")
    if word != "WELCOME":
        raise RuntimeError(f"expected WELCOME, got {word} {cid}")
    end.cid = int(cid)
    return end


async def open_pairs(
    host: str,
    port: int,
    pid: int,
    tls: ssl.SSLContext | None,
    count: int,
    kind: str,
    web: bool = False,
) -> list[tuple[End, End]]:
    """``count`` pairs in sessions, both ends on one worker (same) or on two (cross)."""
    ends = [await connect(host, port, tls, web) for _ in range(2 * count + 2)]
    where = benchload.holders_of(pid, port, {e.port for e in ends}, "the server")
    plan = benchload.plan_pairs([where[e.port] for e in ends], count, kind)
    if plan is None:
        raise RuntimeError(f"cannot make {count} {kind}-worker pairs")
    used = {i for pair in plan for i in pair}
    for i, e in enumerate(ends):
        if i not in used:
            e.writer.close()
    pairs = [(ends[a], ends[b]) for a, b in plan]
    for a, b in pairs:
        a.send(f"CONNECT {b.cid}")
    for a, b in pairs:
        for end, peer in ((a, b), (b, a)):
            got = (await end.line()).decode().strip()
            if got != f"CONNECTED {peer.cid}":
                raise RuntimeError(f"client {end.cid}: expected CONNECTED {peer.cid}, got {got}")
    return pairs


async def pingpong(a: End, b: End, tally: Tally, stop: asyncio.Event) -> None:
    """A sends, B sends the text back, A reads it: one round trip."""
    seq = 0
    while not stop.is_set():
        seq += 1
        a.send(stamp(seq))
        text = (await b.line())[4:-1].decode()
        b.send(text)
        back = (await a.line())[4:-1].decode()
        sent_seq, sent_at, *_ = back.rstrip(".").split(" ")
        if int(sent_seq) != seq:
            tally.bad += 1
        if tally.measuring:
            tally.done += 1
            tally.latencies.append(time.perf_counter_ns() - int(sent_at))


async def stream(a: End, b: End, tally: Tally, stop: asyncio.Event) -> None:
    """A keeps ``STREAM_WINDOW`` lines in flight to B."""
    window = benchload.STREAM_WINDOW
    sent = received = 0
    room = asyncio.Event()
    room.set()

    async def read() -> None:
        nonlocal received
        while (line := await b.line()) != b"MSG END\n":
            received += 1
            seq, sent_at, *_ = line[4:-1].decode().rstrip(".").split(" ")
            if int(seq) != received:
                tally.bad += 1
            if tally.measuring:
                tally.done += 1
                tally.latencies.append(time.perf_counter_ns() - int(sent_at))
            if sent - received <= window // 2:
                room.set()

    reader = asyncio.create_task(read())
    while not stop.is_set():
        await room.wait()
        room.clear()
        burst = window - (sent - received)
        a.send_lines([stamp(sent + i + 1) for i in range(burst)])
        sent += burst
        await a.writer.drain()
    a.send("END")
    await reader


async def run(
    host: str,
    port: int,
    pid: int,
    tls: ssl.SSLContext | None,
    workload: str,
    count: int,
    kind: str,
    warmup: float,
    duration: float,
    web: bool = False,
) -> tuple[Tally, float]:
    """One workload; the tally of its measured ``duration`` and the seconds it really took
    (``web``: over WebSocket)."""
    pairs = await open_pairs(host, port, pid, tls, count, kind, web)
    tally, stop = Tally(), asyncio.Event()
    drive = pingpong if workload == "pingpong" else stream
    tasks = [asyncio.create_task(drive(a, b, tally, stop)) for a, b in pairs]
    try:
        await asyncio.sleep(warmup)
        tally.measuring, started = True, time.monotonic()
        await asyncio.sleep(duration)
        tally.measuring, took = False, time.monotonic() - started
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), benchload.DRAIN)
    finally:
        for task in tasks:
            task.cancel()
        for a, b in pairs:
            a.writer.close()
            b.writer.close()
    return tally, took
