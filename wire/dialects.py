"""How a connection's replies become bytes: protocol v1 lines or the original's records.

No I/O here. Replies are decided as typed objects (``wire.replies``), by the
matchmaker or by a worker's connection; a connection holds one ``Dialect`` and
asks it for the bytes of each. v1 writes a reply's ``line()``; the legacy
dialect translates it into the original client's words. ``msg`` is
``render(Msg(text))`` without building the reply: it is on the path of every
chat line.
"""

from __future__ import annotations

from typing import Protocol

from wire import legacy
from wire.codec import LineDecoder
from wire.commands import help_lines
from wire.errors import ErrorCode
from wire.legacy import RecordDecoder, record, records
from wire.replies import (
    Bye,
    Cancelled,
    Clients,
    Connected,
    Ended,
    Error,
    HelpLine,
    Listing,
    Msg,
    Named,
    Outage,
    Pong,
    Reply,
    Unknown,
    Waiting,
    Welcome,
)

Decoder = LineDecoder | RecordDecoder

#: The reply to ``HELP``.
HELP = tuple(HelpLine(line.removeprefix("HELP ")) for line in help_lines())

#: Errors after which the server closes the connection: the original client knows
#: only ABORT for them.
_FATAL = (ErrorCode.FULL, ErrorCode.TOO_MANY, ErrorCode.SLOW_CONSUMER, ErrorCode.IDLE)


class Dialect(Protocol):
    """What a connection needs of the words its client speaks."""

    name: str
    #: replies are written in records at a pace (the original client reads one per recv)
    paced: bool
    #: the client is told its id on arrival
    welcomes: bool
    #: the client may take a name (``NAME``) and ``CONNECT`` to one
    named: bool

    def decoder(self, max_line: int) -> Decoder: ...

    def render(self, reply: Reply) -> bytes: ...

    def msg(self, text: str) -> bytes: ...

    def help(self) -> bytes: ...


class LineDialect:
    """Protocol v1 (docs/PROTOCOL.md): one UTF-8 line per reply."""

    name = "line"
    paced = False
    welcomes = True
    named = True

    @staticmethod
    def decoder(max_line: int) -> LineDecoder:
        return LineDecoder(max_line)

    @staticmethod
    def render(reply: Reply) -> bytes:
        return (reply.line() + "\n").encode()

    @staticmethod
    def msg(text: str) -> bytes:
        return b"MSG " + text.encode() + b"\n"

    @staticmethod
    def help() -> bytes:
        return b"".join(LineDialect.render(line) for line in HELP)


class LegacyDialect:
    """The original C++ client's words in 256-byte records (docs/PROTOCOL.md, "Legacy")."""

    name = "legacy"
    paced = True
    welcomes = False  # the original client expects nothing before its first command
    named = False  # its users are known by id only, as they always were

    @staticmethod
    def decoder(max_line: int) -> RecordDecoder:
        return RecordDecoder()

    @staticmethod
    def render(reply: Reply) -> bytes:
        match reply:
            case Msg(text):
                return records("SEND ", text)
            case Clients(entries):
                return record(legacy.get_reply(entries))
            case Listing():
                return record(legacy.get_reply(reply.clients().entries))
            case Error(code) if code in _FATAL:
                return record(legacy.ABORT)  # the connection closes after it
            case Error(code):
                return record(legacy.error_reply(code))
            case Connected(peer, requested):  # the '%' marks the end that was asked
                return record(
                    f"CONNECT SUCCESS {peer}" if requested else f"CONNECT SUCCESS% {peer}"
                )
            case Ended():
                return record(legacy.TERMINATED)
            case Bye():
                return record(legacy.ABORT)
            case Outage():
                return record(legacy.OUTAGE)
            case Welcome():
                return b""
            case Pong():
                return record(legacy.PONG)
            case HelpLine(text):  # only in words the original client prints: help() below
                return legacy.say(text)
            case Waiting() | Cancelled():  # shown in full, as its user's own words are
                return legacy.say(reply.line())
            case Named() | Unknown():
                return record(reply.line())
        raise TypeError(f"no legacy words for {reply!r}")

    @staticmethod
    def msg(text: str) -> bytes:
        return records("SEND ", text)

    @staticmethod
    def help() -> bytes:
        return legacy.help_records()


# the classes themselves are the dialects: their methods are static
LINE: Dialect = LineDialect
LEGACY: Dialect = LegacyDialect
