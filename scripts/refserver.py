"""A plain single-process asyncio chat relay: what a user would write instead of the server.

Used only by ``scripts/bench.py`` as the reference point for its ratios. It
speaks enough of protocol v1 (docs/PROTOCOL.md) for every benchmark workload:
``WELCOME``, ``GET``/``CLIENTS``, ``CONNECT``/``CONNECTED``, ``MSG`` relay,
``#GOODBYE#``/``ENDED``, ``#CLOSE#``/``BYE``, ``PING``/``PONG``. It is written
the way a competent user would write it in an afternoon: asyncio streams, one
coroutine per client, a dict of clients, ``readline`` in, ``write`` + ``drain``
out. No tuning, no batching, no uvloop: an honest baseline, not a straw man.

``python scripts/refserver.py --port 0`` prints ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import resource
import signal

MAX_LINE = 4096


class Client:
    """One connected client: its id, its writer, and its partner while in a session."""

    __slots__ = ("cid", "writer", "peer")

    def __init__(self, cid: int, writer: asyncio.StreamWriter) -> None:
        self.cid = cid
        self.writer = writer
        self.peer: Client | None = None


class Relay:
    """Every client by id; pairs them and relays their lines."""

    def __init__(self) -> None:
        self.clients: dict[int, Client] = {}
        self.freed: list[int] = []  # ids given back, smallest first (like file descriptors)
        self.next_id = 1

    def new_id(self) -> int:
        if self.freed:
            return heapq.heappop(self.freed)
        self.next_id += 1
        return self.next_id - 1

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = Client(self.new_id(), writer)
        self.clients[me.cid] = me
        writer.write(b"WELCOME %d\n" % me.cid)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than the reader's limit; it was dropped
                    writer.write(b"ERROR TOO_LONG\n")
                    continue
                if not line.endswith(b"\n"):  # EOF; a final line without \n is discarded
                    break
                text = line.rstrip(b"\r\n")
                if me.peer is not None:
                    if text == b"#GOODBYE#":
                        self.end(me)
                    elif text == b"#CLOSE#":
                        writer.write(b"BYE\n")
                        break
                    else:
                        peer = me.peer
                        peer.writer.write(b"MSG " + text + b"\n")
                        try:
                            await peer.writer.drain()
                        except ConnectionError:
                            pass  # the partner is gone; its own coroutine cleans up
                elif self.command(me, text):
                    await writer.drain()
                else:
                    break
        except ConnectionError:
            pass
        finally:
            self.leave(me)
            writer.close()

    def command(self, me: Client, text: bytes) -> bool:
        """Handle a line from a FREE client; False means it asked to close."""
        words = text.decode(errors="replace").split()
        if not words:
            return True
        word = words[0].upper()
        out = me.writer
        if word == "GET":
            free_only = len(words) > 1 and words[1].upper() == "FREE"
            items = [
                f"{cid}={'BUSY' if c.peer else 'FREE'}"
                for cid, c in sorted(self.clients.items())
                if not (free_only and c.peer)
            ]
            out.write(" ".join(["CLIENTS", *items]).encode() + b"\n")
        elif word == "CONNECT":
            if len(words) != 2 or not words[1].isdigit():
                out.write(b"ERROR USAGE CONNECT <id>\n")
                return True
            target = self.clients.get(int(words[1]))
            if target is None:
                out.write(b"ERROR OFFLINE %s\n" % words[1].encode())
            elif target is me:
                out.write(b"ERROR SELF\n")
            elif target.peer is not None:
                out.write(b"ERROR BUSY %d\n" % target.cid)
            else:
                me.peer, target.peer = target, me
                out.write(b"CONNECTED %d\n" % target.cid)
                target.writer.write(b"CONNECTED %d\n" % me.cid)
        elif word == "#CLOSE#":
            out.write(b"BYE\n")
            return False
        elif word == "#GOODBYE#":
            out.write(b"ERROR NOT_IN_CHAT\n")
        elif word == "PING":
            out.write(b"PONG\n")
        else:
            out.write(f"ERROR UNKNOWN_COMMAND {words[0]}\n".encode())
        return True

    def end(self, me: Client) -> None:
        """End ``me``'s session: ``ENDED`` to both ends, both FREE again."""
        peer = me.peer
        if peer is None:
            return
        me.peer = peer.peer = None
        me.writer.write(b"ENDED %d\n" % peer.cid)
        peer.writer.write(b"ENDED %d\n" % me.cid)

    def leave(self, me: Client) -> None:
        if self.clients.pop(me.cid, None) is None:
            return
        peer = me.peer
        if peer is not None:
            me.peer = peer.peer = None
            peer.writer.write(b"ENDED %d\n" % me.cid)
        heapq.heappush(self.freed, me.cid)


async def main(host: str, port: int) -> None:
    relay = Relay()
    server = await asyncio.start_server(relay.serve, host, port, limit=MAX_LINE + 2)
    name = server.sockets[0].getsockname()
    print(f"listening on {name[0]}:{name[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for client in list(relay.clients.values()):
        client.writer.write(b"OUTAGE\n")
        client.writer.close()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one descriptor per client
    asyncio.run(main(args.host, args.port))


if __name__ == "__main__":
    run()
