"""What a client may send, parsed from one decoded line.

No I/O here. The ``VERBS`` table is the single source for parsing, for the
``HELP`` reply and for the usage hints in ``ERROR USAGE``; docs/PROTOCOL.md is
checked against it by a test.

While FREE a line is a command: the first word, case-insensitive, picks the
verb, and blanks around words are ignored. While BUSY every line is a message
for the partner except the two exact control lines ``#GOODBYE#`` and
``#CLOSE#``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wire.errors import ErrorCode, ProtocolError

#: ``ERROR UNKNOWN_COMMAND`` echoes at most this many characters of the word: a
#: client that sends 4 KiB of garbage per line must not get 4 KiB back per line.
ECHO_LIMIT = 64

GOODBYE = "#GOODBYE#"
CLOSE = "#CLOSE#"


@dataclass(frozen=True, slots=True)
class Get:
    """List connected clients; ``free_only`` keeps just the FREE ones."""

    free_only: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """Ask for a session with ``target``, or with the client called ``name`` (then
    ``target`` is 0)."""

    target: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Match:
    """Pair with whoever has waited longest, or wait in line; ``new``: not with the
    partner of the last session."""

    new: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Leave the line ``MATCH`` put this client in."""


@dataclass(frozen=True, slots=True)
class Name:
    """Take ``name`` (others may ``CONNECT`` to it); an empty one drops the name."""

    name: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask the server to answer ``PONG``."""


@dataclass(frozen=True, slots=True)
class Help:
    """Ask for the ``HELP`` lines."""


@dataclass(frozen=True, slots=True)
class Close:
    """Leave the server: ``BYE``, then the socket closes."""


@dataclass(frozen=True, slots=True)
class Goodbye:
    """End the current session; both ends stay connected and FREE."""


@dataclass(frozen=True, slots=True)
class Message:
    """A line for the session partner, relayed as ``MSG <text>``."""

    text: str


Command = Get | Connect | Match | Cancel | Name | Ping | Help | Close | Goodbye | Message


@dataclass(frozen=True, slots=True)
class Verb:
    """One command word: how it is written and what it does."""

    syntax: str
    summary: str


#: Every command a FREE client may send, in the order ``HELP`` lists them.
VERBS: dict[str, Verb] = {
    "GET": Verb("GET [FREE]", "list connected clients (FREE: only those free to chat)"),
    "CONNECT": Verb("CONNECT <id>", "start a one-to-one session with a FREE client (or <name>)"),
    "MATCH": Verb(
        "MATCH [NEW]",
        "pair with whoever has waited longest, or wait for the next (NEW: not your last partner)",
    ),
    "CANCEL": Verb("CANCEL", "leave the line MATCH put you in"),
    "NAME": Verb("NAME [<name>]", "take a name others can CONNECT to (none: drop yours)"),
    "PING": Verb("PING", "check that the server answers (PONG)"),
    "HELP": Verb("HELP", "show this list"),
    CLOSE: Verb(CLOSE, "disconnect (BYE)"),
    GOODBYE: Verb(GOODBYE, "in a session: end it; both of you stay connected and FREE"),
}

#: Shown after the verbs by ``HELP``: how a session behaves.
SESSION_HELP = "in a session every other line goes to your partner as MSG <line>"


def _usage(verb: str) -> ProtocolError:
    return ProtocolError(ErrorCode.USAGE, VERBS[verb].syntax)


#: The longest name: short enough to sit in a ``GET`` listing of 10,000 clients.
NAME_MAX = 24

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def valid_name(word: str) -> bool:
    """1 to ``NAME_MAX`` letters, digits, ``_`` and ``-``, not all digits (those are ids)."""
    return 0 < len(word) <= NAME_MAX and _NAME_CHARS.issuperset(word) and not word.isdigit()


def name_key(name: str) -> str:
    """What two names are compared by: names are unique without regard to case."""
    return name.lower()


def _parse_target(word: str) -> Connect:
    # ids are positive decimal integers; "+5", "5.0", "0x5" and "0" are not ids
    if valid_name(word):
        return Connect(0, word)
    if not word.isascii() or not word.isdigit() or len(word) > 18:
        raise _usage("CONNECT")
    value = int(word)
    if value < 1:
        raise _usage("CONNECT")
    return Connect(value)


_BARE: dict[str, Command] = {"PING": Ping(), "HELP": Help(), CLOSE: Close(), "CANCEL": Cancel()}


def parse_free(line: str) -> Command | None:
    """Parse a line from a FREE client; ``None`` for a blank line (ignored).

    Raises ``ProtocolError`` (USAGE, UNKNOWN_COMMAND, NOT_IN_CHAT) for a line
    that is no valid command.
    """
    words = line.split()
    if not words:
        return None
    verb = words[0].upper()
    args = words[1:]
    if verb == "GET":
        if not args:
            return Get(False)
        if len(args) == 1 and args[0].upper() == "FREE":
            return Get(True)
        raise _usage(verb)
    if verb == "CONNECT":
        if len(args) != 1:
            raise _usage(verb)
        return _parse_target(args[0])
    if verb == "MATCH":
        if not args:
            return Match(False)
        if len(args) == 1 and args[0].upper() == "NEW":
            return Match(True)
        raise _usage(verb)
    if verb == "NAME":
        if not args:
            return Name("")
        if len(args) == 1 and valid_name(args[0]):
            return Name(args[0])
        raise _usage(verb)
    if verb in ("PING", "HELP", CLOSE, "CANCEL"):
        if args:
            raise _usage(verb)
        return _BARE[verb]
    if verb == GOODBYE:
        raise ProtocolError(ErrorCode.NOT_IN_CHAT)
    raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, words[0][:ECHO_LIMIT])


def parse_busy(line: str) -> Command:
    """Parse a line from a client in a session: a control line or a message."""
    if line == GOODBYE:
        return Goodbye()
    if line == CLOSE:
        return Close()
    return Message(line)


def help_lines() -> list[str]:
    """The reply to ``HELP``: one ``HELP`` line per verb, then how sessions work."""
    width = max(len(v.syntax) for v in VERBS.values())
    lines = [f"HELP {v.syntax:<{width}}  {v.summary}" for v in VERBS.values()]
    lines.append(f"HELP {SESSION_HELP}")
    return lines
