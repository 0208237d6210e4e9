"""What the user types, turned into the line the server gets.

No I/O here. Users may type the protocol words as they are (``GET``,
``CONNECT 3``, ``#GOODBYE#``, ``#CLOSE#``): those lines go out unchanged, so the
server stays the one judge of the protocol. A line starting with ``/`` is a
friendly alias (``/list``, ``/connect 3``, ...) mapped here; ``//text`` sends
``/text``. An unknown alias, or one used with the wrong arguments, is refused
locally and nothing is sent, because the server would not understand it either.

In a session every line the server gets is relayed to the partner, so the
aliases that only make sense while FREE (``/list``, ``/connect``, ...) are
refused there instead of being sent as a surprising message.
"""

from __future__ import annotations

from dataclasses import dataclass

from wire.commands import CLOSE, GOODBYE, parse_free
from wire.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class Alias:
    """One ``/word``: the wire line it stands for and how it is used."""

    #: the wire line; ``{}`` is replaced by the single argument, if any
    template: str
    #: how the user writes it, e.g. ``/connect <id>``
    syntax: str
    summary: str
    #: False when the alias means nothing in a session (it would become a message)
    in_session: bool = False
    #: the wire line without the argument, when the argument may be left out
    bare: str | None = None

    @property
    def takes_argument(self) -> bool:
        """Whether the alias needs exactly one word after it."""
        return "{}" in self.template


#: Every alias, in the order ``/help`` lists them.
ALIASES: dict[str, Alias] = {
    "list": Alias("GET", "/list", "list connected clients"),
    "free": Alias("GET FREE", "/free", "list the clients free to chat"),
    "connect": Alias("CONNECT {}", "/connect <id>", "start a session with client <id> (or <name>)"),
    "match": Alias(
        "MATCH {}",
        "/match [new]",
        "pair with whoever waits, or wait (new: not your last partner)",
        bare="MATCH",
    ),
    "cancel": Alias("CANCEL", "/cancel", "stop waiting for a partner"),
    "name": Alias(
        "NAME {}",
        "/name [<name>]",
        "take a name others can /connect to (none: drop it)",
        bare="NAME",
    ),
    "ping": Alias("PING", "/ping", "check that the server answers"),
    "help": Alias("HELP", "/help", "show this list and the server's commands", in_session=True),
    "bye": Alias(GOODBYE, "/bye", "end the current session, stay connected", in_session=True),
    "quit": Alias(CLOSE, "/quit", "disconnect and exit (also Ctrl-C, Ctrl-D)", in_session=True),
}


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``line`` to the server (no terminator; never contains a line break)."""

    line: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Send nothing; tell the user ``reason`` instead."""

    reason: str


@dataclass(frozen=True, slots=True)
class ShowHelp:
    """Show the alias list; ``send`` is the line to send too, if any."""

    send: str | None


Action = Send | Refuse | ShowHelp


def split_lines(text: str) -> list[str]:
    """Cut typed or pasted text into wire lines, as the server's decoder would.

    Only ``\\n`` ends a line (a ``\\r`` just before it is dropped), so what the
    user pasted reaches the server as the same lines; a lone trailing ``\\r``
    would be eaten by the server's decoder, so it is dropped here as well.
    """
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def translate(line: str, *, busy: bool) -> Action:
    """Map one input line (no ``\\n`` in it) to what to do with it.

    ``busy`` is this client's view of whether it is in a session.
    """
    if not line.startswith("/"):
        return Send(line)
    if line.startswith("//"):
        return Send(line[1:])
    word, _, rest = line[1:].partition(" ")
    args = rest.split()
    alias = ALIASES.get(word.lower())
    if alias is None:
        name = line.split()[0]
        return Refuse(f"{name} is not a command here; /help lists them, //text sends /text")
    if busy and not alias.in_session:
        return Refuse(
            f"{alias.syntax.split()[0]} works only outside a session "
            "(in one, every line goes to your partner); /bye ends the session"
        )
    if not args and alias.bare is not None:
        return Send(alias.bare)
    if len(args) != (1 if alias.takes_argument else 0):
        return Refuse(f"usage: {alias.syntax}")
    if word.lower() == "help":
        return ShowHelp(None if busy else alias.template)
    wire = alias.template.format(*args)
    if not _well_formed(wire):
        return Refuse(f"usage: {alias.syntax}")
    return Send(wire)


def _well_formed(wire: str) -> bool:
    """Whether the server would take ``wire`` as a command (``/connect x!`` it would not).

    The server's own parser judges, so the alias refuses exactly what the
    server would answer with ``ERROR USAGE``.
    """
    try:
        parse_free(wire)
    except ProtocolError as exc:
        return exc.code is not ErrorCode.USAGE
    return True


def help_lines() -> list[str]:
    """The local ``/help`` text: one line per alias, then how chatting works."""
    width = max(len(a.syntax) for a in ALIASES.values())
    lines = [f"{a.syntax:<{width}}  {a.summary}" for a in ALIASES.values()]
    lines.append("in a session, plain text goes to your partner; //text sends /text")
    lines.append("protocol words work as typed: GET, GET FREE, CONNECT <id>, #GOODBYE#, #CLOSE#")
    lines.append("Tab after /connect completes the ids and names of the last /list")
    return lines


def completions(before: str, known: dict[int, str]) -> list[str]:
    """What Tab may complete the word being typed to, after ``/connect `` only.

    ``before`` is the text before the cursor; ``known`` the ids and names of the
    last listing (``ClientSession.names``). Ids first, ascending, then names;
    a name matches without regard to case, as the server compares them.
    """
    word, space, rest = before.partition(" ")
    if word.lower() != "/connect" or not space or " " in rest.lstrip():
        return []
    prefix = rest.lstrip()
    ids = [str(cid) for cid in sorted(known) if str(cid).startswith(prefix)]
    names = sorted(
        (name for name in known.values() if name and name.lower().startswith(prefix.lower())),
        key=str.lower,
    )
    return ids + names
