"""What the server says, as typed replies: built by the server, read by the client.

No I/O here. Each reply is a frozen dataclass. The matchmaker decides replies
as these objects (``pack`` and ``unpack`` carry them across a queue), a worker
renders them to bytes through its connection's dialect (``wire.dialects``),
and the terminal client parses what it reads into them again. ``line()`` is a
reply's one v1 wire form (without the terminator) and ``parse_reply`` its
inverse, so the server's output and the client's reading of it cannot drift
apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wire.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Welcome:
    """First line after connect: the client's own id."""

    id: int

    def line(self) -> str:
        return f"WELCOME {self.id}"


#: A client's status in ``CLIENTS``, as the plain ints that cross the pipes (an
#: enum would be pickled through Python code, for each of 10,000 clients).
FREE, BUSY, WAITING = 0, 1, 2
STATUS_WORDS = ("FREE", "BUSY", "WAITING")
_STATUS = {word: status for status, word in enumerate(STATUS_WORDS)}

#: One client in ``CLIENTS``: its id, its status and its name ("" for none).
Listed = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Clients:
    """Reply to ``GET``: ``(id, status, name)`` for every listed client, ascending id."""

    entries: tuple[Listed, ...]

    def line(self) -> str:
        return clients_line(self.entries)


@dataclass(frozen=True, slots=True)
class Listing:
    """Reply to ``GET`` as the matchmaker rendered it: the ``CLIENTS`` line itself.

    At 100,000 clients the line is a megabyte; the matchmaker keeps it rendered
    (``matchmaker.listing``), so a worker writes it as it comes instead of
    formatting 100,000 items. The same line as ``Clients``; ``clients()`` reads it
    back for a dialect that words it otherwise (legacy).
    """

    text: str

    def line(self) -> str:
        return self.text

    def clients(self) -> Clients:
        parsed = _parse_clients(self.text.removeprefix("CLIENTS").strip())
        if parsed is None:
            raise ValueError(f"not a CLIENTS line: {self.text[:80]!r}")
        return parsed


@dataclass(frozen=True, slots=True)
class Connected:
    """A session with ``peer`` started (sent to both ends).

    ``requested`` marks the end that sent the ``CONNECT``. It is not part of the
    v1 line (so it is no part of equality either); the legacy dialect shows it.
    """

    peer: int
    requested: bool = field(default=False, compare=False)

    def line(self) -> str:
        return f"CONNECTED {self.peer}"


@dataclass(frozen=True, slots=True)
class Msg:
    """A line the session partner sent."""

    text: str

    def line(self) -> str:
        return f"MSG {self.text}"


@dataclass(frozen=True, slots=True)
class Ended:
    """The session with ``peer`` is over; this end is FREE again."""

    peer: int

    def line(self) -> str:
        return f"ENDED {self.peer}"


@dataclass(frozen=True, slots=True)
class Bye:
    """Reply to ``#CLOSE#``; the server closes the socket after it."""

    def line(self) -> str:
        return "BYE"


@dataclass(frozen=True, slots=True)
class Outage:
    """The server is shutting down; the socket closes after it."""

    def line(self) -> str:
        return "OUTAGE"


@dataclass(frozen=True, slots=True)
class Waiting:
    """Reply to ``MATCH`` when nobody waits: this client waits in the line now."""

    def line(self) -> str:
        return "WAITING"


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Reply to ``CANCEL``: this client has left the line."""

    def line(self) -> str:
        return "CANCELLED"


@dataclass(frozen=True, slots=True)
class Named:
    """Reply to ``NAME``: the client's name now (``NAMED`` alone: it has none)."""

    name: str = ""

    def line(self) -> str:
        return f"NAMED {self.name}" if self.name else "NAMED"


@dataclass(frozen=True, slots=True)
class Pong:
    """Reply to ``PING``."""

    def line(self) -> str:
        return "PONG"


@dataclass(frozen=True, slots=True)
class HelpLine:
    """One line of the reply to ``HELP``."""

    text: str

    def line(self) -> str:
        return f"HELP {self.text}"


@dataclass(frozen=True, slots=True)
class Error:
    """A request was refused; ``detail`` may be empty."""

    code: ErrorCode
    detail: str = ""

    def line(self) -> str:
        return (
            f"ERROR {self.code.value} {self.detail}" if self.detail else f"ERROR {self.code.value}"
        )


@dataclass(frozen=True, slots=True)
class Unknown:
    """A line this version does not know (kept whole, so a client can show it)."""

    text: str

    def line(self) -> str:
        return self.text


Reply = (
    Welcome
    | Clients
    | Listing
    | Connected
    | Msg
    | Ended
    | Bye
    | Outage
    | Waiting
    | Cancelled
    | Named
    | Pong
    | HelpLine
    | Error
    | Unknown
)


def clients_line(entries: Iterable[Listed]) -> str:
    """``CLIENTS 1=FREE 2=BUSY=ann 3=WAITING``; plain ``CLIENTS`` when there are none.

    A named client is ``id=STATUS=name``, the name last: a reader that splits
    each item on ``=`` and reads the first two fields still gets every id and
    status (names never hold ``=`` or blanks).
    """
    items = clients_items(entries)
    return f"CLIENTS {items}" if items else "CLIENTS"


def clients_items(entries: Iterable[Listed]) -> str:
    """The items of a ``CLIENTS`` line, blank-separated, without the word (a part of it)."""
    words = STATUS_WORDS
    return " ".join(
        f"{cid}={words[status]}={name}" if name else f"{cid}={words[status]}"
        for cid, status, name in entries
    )


def _int(word: str) -> int | None:
    return int(word) if word.isascii() and word.isdigit() else None


def _parse_clients(rest: str) -> Clients | None:
    entries = []
    for item in rest.split():
        cid, sep, tail = item.partition("=")
        word, _, name = tail.partition("=")
        number = _int(cid)
        status = _STATUS.get(word)
        if not sep or number is None or status is None:
            return None
        entries.append((number, status, name))
    return Clients(tuple(entries))


_NUMBERED: dict[str, type[Welcome | Connected | Ended]] = {
    "WELCOME": Welcome,
    "CONNECTED": Connected,
    "ENDED": Ended,
}
_BARE: dict[str, Reply] = {
    "BYE": Bye(),
    "OUTAGE": Outage(),
    "PONG": Pong(),
    "WAITING": Waiting(),
    "CANCELLED": Cancelled(),
    "NAMED": Named(),
}


def parse_reply(line: str) -> Reply:
    """Parse one server line; anything unrecognised comes back as ``Unknown``."""
    word, _, rest = line.partition(" ")
    if word == "MSG":
        return Msg(rest)
    if word == "HELP":
        return HelpLine(rest)
    reply: Reply | None = None
    if word in ("WELCOME", "CONNECTED", "ENDED"):
        number = _int(rest)
        if number is not None:
            reply = _NUMBERED[word](number)
    elif word == "CLIENTS":
        reply = _parse_clients(rest)
    elif word == "NAMED" and rest:
        reply = Named(rest)
    elif word == "ERROR":
        code, _, detail = rest.partition(" ")
        if code in ErrorCode.__members__:
            reply = Error(ErrorCode[code], detail)
    elif not rest:
        reply = _BARE.get(word)
    return reply if reply is not None else Unknown(line)


#: The replies the matchmaker decides.
Decided = Clients | Error | Ended | Bye | Outage | Waiting | Cancelled | Named | Listing

#: The same, by their tag in ``pack``.
_PACKED: tuple[type[Decided], ...] = (
    Clients,
    Error,
    Ended,
    Bye,
    Outage,
    Waiting,
    Cancelled,
    Named,
    Listing,
)
_TAG = {cls: tag for tag, cls in enumerate(_PACKED)}
_CODES = {code.value: code for code in ErrorCode}

#: ``(tag, *fields)``, the fields as plain values (an error's code by its name)
Packed = tuple[Any, ...]


def pack(reply: Decided) -> Packed:
    """A matchmaker's reply as a plain tuple: it crosses a queue pickled in C.

    A dataclass (or an enum) would be pickled through Python code, several
    times slower, on every request's answer.
    """
    tag = _TAG[type(reply)]
    if isinstance(reply, Error):
        return (tag, reply.code.value, reply.detail)
    if isinstance(reply, Clients):
        return (tag, reply.entries)
    if isinstance(reply, Ended):
        return (tag, reply.peer)
    if isinstance(reply, Named):
        return (tag, reply.name)
    if isinstance(reply, Listing):
        return (tag, reply.text)
    return (tag,)


def unpack(packed: Packed) -> Decided:
    """The reply ``pack`` made the tuple of."""
    cls = _PACKED[packed[0]]
    if cls is Error:
        return Error(_CODES[packed[1]], packed[2])
    return cls(*packed[1:])
