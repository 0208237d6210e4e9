"""How server lines look to a person: notices, partner messages, tables, errors.

No I/O and no clock here: the time stamp of a message is passed in, and colour
is an ANSI escape added by ``paint`` only when the caller asks, so every output
can be checked as plain text. Each server line renders to one output line,
except ``CLIENTS`` in table form (interactive use), which is one line per client.
"""

from __future__ import annotations

import datetime
import enum
import unicodedata
from dataclasses import dataclass

from wire import replies
from wire.errors import ErrorCode


class Tone(enum.Enum):
    """What kind of line this is, which picks its colour."""

    #: session and connection events: welcome, connected, ended, bye
    NOTICE = "notice"
    #: a line from the partner
    PARTNER = "partner"
    #: an ERROR from the server, or input refused locally
    ERROR = "error"
    #: the server went away or is going away
    ALERT = "alert"
    #: plain information: client lists, help, pong, unknown lines
    INFO = "info"


#: SGR codes per tone: cyan notices, green partner lines, red errors,
#: bold yellow alerts, default colour for information.
_SGR: dict[Tone, str] = {
    Tone.NOTICE: "36",
    Tone.PARTNER: "32",
    Tone.ERROR: "31",
    Tone.ALERT: "1;33",
    Tone.INFO: "",
}


@dataclass(frozen=True, slots=True)
class Output:
    """One line to show the user (no terminator)."""

    tone: Tone
    text: str


def paint(output: Output, *, color: bool) -> str:
    """The text of ``output``, wrapped in its ANSI colour when ``color`` is set."""
    code = _SGR[output.tone]
    if not color or not code:
        return output.text
    return f"\x1b[{code}m{output.text}\x1b[0m"


def error_sentence(error: replies.Error, me: int | None) -> str:
    """What an ``ERROR`` means and what to do about it, as one sentence."""
    code, detail = error.code, error.detail
    peer = detail or "that client"
    if code is ErrorCode.OFFLINE and detail and not detail.isdigit():
        return f"no client is called {detail}; /list shows who is connected"
    if code is ErrorCode.OFFLINE:
        return f"no client has id {peer}; /list shows who is connected"
    if code is ErrorCode.SELF:
        you = f" ({me})" if me is not None else ""
        return f"that is your own id{you}; pick someone else from /list"
    if code is ErrorCode.BUSY:
        return f"client {peer} is already in a session; /free shows who is free to chat"
    if code is ErrorCode.TALKING:
        return f"you are already in a session with client {peer}; just type to talk"
    if code is ErrorCode.USAGE:
        return f"wrong arguments; usage: {detail}" if detail else "wrong arguments"
    if code is ErrorCode.UNKNOWN_COMMAND:
        word = f"{detail!r} is" if detail else "that is"
        return f"{word} not a command; /help lists them, /connect <id> starts a chat"
    if code is ErrorCode.NOT_IN_CHAT:
        return "you are not in a session; /connect <id> starts one"
    if code is ErrorCode.WAITING:
        return "you are waiting for a partner already; /cancel leaves the line"
    if code is ErrorCode.NOT_WAITING:
        return "you are not waiting for a partner; /match finds one"
    if code is ErrorCode.NAME_TAKEN:
        return f"the name {detail or 'you asked for'} is taken; pick another with /name <name>"
    if code is ErrorCode.TOO_LONG:
        return "that line was too long for the server and was dropped; send it in parts"
    if code is ErrorCode.ENCODING:
        return "the server could not read that line as UTF-8 and dropped it"
    if code is ErrorCode.FULL:
        return "the server is full; try again later"
    if code is ErrorCode.TOO_MANY:
        return "the server takes no more connections from your address just now; try later"
    if code is ErrorCode.SLOW_CONSUMER:
        return "the server dropped this client for reading too slowly"
    if code is ErrorCode.IDLE:
        return "the server closed this idle connection; reconnect to go on"
    if code is ErrorCode.UNAVAILABLE:
        return "the servers' shared table cannot be reached just now; try again in a moment"
    return f"{code.value} {detail}".rstrip()  # a code added to ErrorCode but not here yet


def clients_summary(entries: tuple[replies.Listed, ...], me: int | None) -> str:
    """``CLIENTS`` on one line: ``clients: 1 free, 2 ann busy, 7 waiting (you)``."""
    if not entries:
        return "clients: none"
    parts = [
        f"{cid}{' ' + name if name else ''} {replies.STATUS_WORDS[status].lower()}"
        f"{' (you)' if cid == me else ''}"
        for cid, status, name in entries
    ]
    return "clients: " + ", ".join(parts)


def clients_table(entries: tuple[replies.Listed, ...], me: int | None) -> list[str]:
    """``CLIENTS`` as a small table: a header, then one row per client (a name column
    when anyone has a name)."""
    if not entries:
        return ["no clients to list"]
    width = max(2, *(len(str(cid)) for cid, _, _ in entries))
    names = max((len(name) for _, _, name in entries), default=0)
    named = f"  {'name':<{max(names, 4)}}" if names else ""
    rows = [f"{'id':>{width}}{named}  status"]
    for cid, status, name in entries:
        you = "  (you)" if cid == me else ""
        column = f"  {name:<{max(names, 4)}}" if names else ""
        rows.append(f"{cid:>{width}}{column}  {replies.STATUS_WORDS[status]}{you}")
    return rows


def stamp(when: datetime.time) -> str:
    """The time stamp in front of a partner's line."""
    return when.strftime("%H:%M:%S")


def visible(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) shown as ``\\xNN`` escapes.

    Server lines carry what other people typed; an escape sequence in a
    partner's message must not move the cursor, clear the screen or retitle
    the terminal.
    """
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _escape(ch: str) -> str:
    return f"\\x{ord(ch):02x}"  # every Cc character is below U+0100


def render(
    reply: replies.Reply,
    *,
    me: int | None,
    partner: int | None,
    when: datetime.time,
    table: bool = False,
    names: dict[int, str] | None = None,
) -> list[Output]:
    """The lines that show ``reply`` to the user.

    ``me`` and ``partner`` are the view after ``reply`` was applied, except
    for ``ENDED``, which names the partner itself. ``table`` asks for
    ``CLIENTS`` as a table rather than one line. ``names`` are the clients'
    names as far as known (the last listing): shown beside their ids. Text
    from the server is passed through ``visible``.
    """
    outputs = _render(reply, me=me, partner=partner, when=when, table=table, names=names or {})
    return [Output(out.tone, visible(out.text)) for out in outputs]


def _render(
    reply: replies.Reply,
    *,
    me: int | None,
    partner: int | None,
    when: datetime.time,
    table: bool,
    names: dict[int, str],
) -> list[Output]:
    match reply:
        case replies.Msg(text):
            who = _label(partner, names) if partner is not None else "?"
            return [Output(Tone.PARTNER, f"[{stamp(when)}] {who}: {text}")]
        case replies.Connected(peer) if names.get(peer):
            return [
                Output(
                    Tone.NOTICE,
                    f"connected: in a session with client {_label(peer, names)}; /bye ends it",
                )
            ]
        case replies.Clients(entries):
            if table:
                return [Output(Tone.INFO, row) for row in clients_table(entries, me)]
            return [Output(Tone.INFO, clients_summary(entries, me))]
        case replies.Error():
            return [Output(Tone.ERROR, f"error: {error_sentence(reply, me)}")]
        case replies.Outage():
            return [Output(Tone.ALERT, "outage: the server is shutting down")]
    return [_one_line(reply)]


def _label(cid: int, names: dict[int, str]) -> str:
    name = names.get(cid)
    return f"{cid} {name}" if name else str(cid)


def _one_line(reply: replies.Reply) -> Output:
    match reply:
        case replies.Welcome(cid):
            return Output(Tone.NOTICE, f"welcome: you are client {cid}")
        case replies.Connected(peer):
            return Output(Tone.NOTICE, f"connected: in a session with client {peer}; /bye ends it")
        case replies.Ended(peer):
            return Output(
                Tone.NOTICE, f"ended: the session with client {peer} is over; you are free"
            )
        case replies.Bye():
            return Output(Tone.NOTICE, "bye: disconnected")
        case replies.Waiting():
            return Output(
                Tone.NOTICE, "waiting: you are next in line for a partner; /cancel leaves"
            )
        case replies.Cancelled():
            return Output(Tone.NOTICE, "cancelled: you left the line; you are free")
        case replies.Named(name) if name:
            return Output(Tone.NOTICE, f"named: others see you as {name}")
        case replies.Named():
            return Output(Tone.NOTICE, "named: you have no name now")
        case replies.Pong():
            return Output(Tone.INFO, "pong")
        case replies.HelpLine(text):
            return Output(Tone.INFO, f"help: {text}")
    return Output(Tone.INFO, f"server: {reply.line()}")
