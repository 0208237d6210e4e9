"""How a connection's replies are written: protocol v1 lines or the original's records.

No I/O here. A worker's connection holds one dialect and asks it for the bytes
of each reply; the matchmaker always speaks v1 (its answers are v1 lines), and
``LegacyDialect`` translates them. Every method returns the bytes to send.
"""

from __future__ import annotations

from ipc import legacy
from ipc.codec import LineDecoder
from ipc.commands import help_lines
from ipc.errors import ErrorCode, ProtocolError
from ipc.legacy import RecordDecoder, record, records
from ipc.replies import Bye, Clients, Ended, Error, parse_reply

_HELP = "".join(line + "\n" for line in help_lines()).encode()


class LineDialect:
    """Protocol v1 (docs/PROTOCOL.md): one UTF-8 line per reply."""

    name = "line"
    paced = False
    welcomes = True

    @staticmethod
    def decoder(max_line: int) -> LineDecoder:
        return LineDecoder(max_line)

    @staticmethod
    def welcome(cid: int) -> bytes:
        return b"WELCOME %d\n" % cid

    @staticmethod
    def answer(line: str) -> bytes:
        return (line + "\n").encode()

    @staticmethod
    def connected(peer: int, requested: bool) -> bytes:
        return b"CONNECTED %d\n" % peer

    @staticmethod
    def msg(text: str) -> bytes:
        return b"MSG " + text.encode() + b"\n"

    @staticmethod
    def ended(peer: int) -> bytes:
        return b"ENDED %d\n" % peer

    @staticmethod
    def error(code: ErrorCode, detail: str = "") -> bytes:
        return (ProtocolError(code, detail).line() + "\n").encode()

    @staticmethod
    def pong() -> bytes:
        return b"PONG\n"

    @staticmethod
    def help() -> bytes:
        return _HELP

    @staticmethod
    def bye() -> bytes:
        return b"BYE\n"

    @staticmethod
    def outage() -> bytes:
        return b"OUTAGE\n"


class LegacyDialect:
    """The original C++ client's words in 256-byte records (docs/PROTOCOL.md, "Legacy")."""

    name = "legacy"
    paced = True
    welcomes = False  # the original client expects nothing before its first command

    @staticmethod
    def decoder(max_line: int) -> RecordDecoder:
        return RecordDecoder()

    @staticmethod
    def welcome(cid: int) -> bytes:
        return b""

    @staticmethod
    def answer(line: str) -> bytes:
        reply = parse_reply(line)
        if isinstance(reply, Clients):
            return record(legacy.get_reply(reply.entries))
        if isinstance(reply, Error):
            return LegacyDialect.error(reply.code)
        if isinstance(reply, Ended):
            return record(legacy.TERMINATED)
        if isinstance(reply, Bye):
            return record(legacy.ABORT)
        return record(line)

    @staticmethod
    def connected(peer: int, requested: bool) -> bytes:
        # the '%' marks the end that was asked
        return record(f"CONNECT SUCCESS {peer}" if requested else f"CONNECT SUCCESS% {peer}")

    @staticmethod
    def msg(text: str) -> bytes:
        return records("SEND ", text)

    @staticmethod
    def ended(peer: int) -> bytes:
        return record(legacy.TERMINATED)

    @staticmethod
    def error(code: ErrorCode, detail: str = "") -> bytes:
        if code in (ErrorCode.FULL, ErrorCode.SLOW_CONSUMER, ErrorCode.IDLE):
            return record(legacy.ABORT)  # the connection closes after it
        return record(legacy.error_reply(code))

    @staticmethod
    def pong() -> bytes:
        return record("PONG")

    @staticmethod
    def help() -> bytes:
        return b"".join(record(line) for line in help_lines())

    @staticmethod
    def bye() -> bytes:
        return record(legacy.ABORT)

    @staticmethod
    def outage() -> bytes:
        return record(legacy.OUTAGE)


Dialect = type[LineDialect] | type[LegacyDialect]
