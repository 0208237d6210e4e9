"""Error codes of protocol v1 and the one exception that carries them.

No I/O here. A ``ProtocolError`` always becomes exactly one ``ERROR <CODE>
[detail]`` line to the client that caused it; any other exception raised while
handling a client is a bug in the server, never the client's fault.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wire.replies import Error


class ErrorCode(enum.Enum):
    """Every code an ``ERROR`` line may carry (docs/PROTOCOL.md lists them)."""

    #: ``CONNECT <id>`` named an id nobody holds; detail: that id.
    OFFLINE = "OFFLINE"
    #: ``CONNECT`` named the requester's own id.
    SELF = "SELF"
    #: ``CONNECT`` named a client that is in a session; detail: its id.
    BUSY = "BUSY"
    #: the requester is already in a session with that id; detail: the id.
    TALKING = "TALKING"
    #: a known command with the wrong arguments; detail: the right syntax.
    USAGE = "USAGE"
    #: the first word is no command; detail: that word.
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    #: ``#GOODBYE#`` outside a session.
    NOT_IN_CHAT = "NOT_IN_CHAT"
    #: ``MATCH`` from a client already waiting in the line.
    WAITING = "WAITING"
    #: ``CANCEL`` from a client that is not waiting in the line.
    NOT_WAITING = "NOT_WAITING"
    #: ``NAME <name>``: another client holds that name (in any case); detail: the name.
    NAME_TAKEN = "NAME_TAKEN"
    #: a line longer than ``--max-line`` bytes; it was discarded up to its end.
    TOO_LONG = "TOO_LONG"
    #: a line that is not valid UTF-8; it was discarded.
    ENCODING = "ENCODING"
    #: the server holds ``--max-clients`` clients; the connection is closed.
    FULL = "FULL"
    #: the client's send queue passed ``--sendq`` bytes; the connection is closed.
    SLOW_CONSUMER = "SLOW_CONSUMER"
    #: its address holds ``--max-per-ip`` connections, or opened ``--accept-rate`` in the
    #: last second; the new connection is closed.
    TOO_MANY = "TOO_MANY"
    #: the client sent nothing for ``--idle-timeout`` seconds; the connection is closed.
    IDLE = "IDLE"
    #: the command needs the table shared by several hosts (``--redis``), and it
    #: cannot be reached now; nothing changed, the client may ask again.
    UNAVAILABLE = "UNAVAILABLE"


class ProtocolError(Exception):
    """A client broke a rule; it gets ``ERROR <code> [detail]`` and nothing changes."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    @property
    def reply(self) -> Error:
        """The ``ERROR`` reply the client gets."""
        from wire.replies import Error  # replies name their codes from here

        return Error(self.code, self.detail)

    def line(self) -> str:
        """The reply line, without its terminator."""
        return self.reply.line()
