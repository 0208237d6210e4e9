"""The original C++ client's framing and words, as pure code (``--legacy-port``).

No I/O here. Every message, both ways, is a fixed 256-byte record holding a
NUL-terminated string; the bytes after the first NUL are padding and may be
garbage (the original writes 256 bytes from a 32-byte object). A record with no
NUL holds 256 bytes of text. Records may arrive split or coalesced, so the
decoder reassembles by 256-byte boundaries.

The original client reads one record per ``read()`` and drops whatever was
coalesced behind it, so the server writes each record on its own, paced
(``workers.output.PacedOutput``); this module only makes the records.

What the original client shows of a record: ``SEND <text>``, and any record
whose word it does not know, print as a line from its partner: ``(Friend):``
and the record from its fifth byte on (the v1 line ``WELCOME 1`` reads
``(Friend): OME 1``). So whatever the server says to it in words of its own
(``PING``, ``HELP``, the line port's hint) goes in ``SEND`` records, which
read as plain sentences.
"""

from __future__ import annotations

from collections.abc import Iterable

from wire.codec import Decoding, Event
from wire.errors import ErrorCode
from wire.replies import BUSY

RECORD = 256

#: Longest text in one record: the last byte is always a NUL.
TEXT = RECORD - 1


class RecordDecoder(Decoding):
    """Splits a byte stream into 256-byte records and their text.

    Same interface as ``wire.codec.LineDecoder``. A trailing ``\\r``/``\\n`` is
    stripped; line breaks inside a record become spaces (a line-dialect partner
    must never receive a line break inside ``MSG``); bytes that are not UTF-8
    are replaced, since the original client has no way to hear an error.
    """

    __slots__ = ("_buf",)

    def __init__(self, max_line: int = TEXT) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def receive(self, data: bytes) -> None:
        self._buf += data

    def take(self, limit: int) -> list[Event]:
        buf = self._buf
        whole = min(len(buf) // RECORD, limit) * RECORD
        events: list[Event] = [_text(bytes(buf[i : i + RECORD])) for i in range(0, whole, RECORD)]
        del buf[:whole]
        return events


def _text(record: bytes) -> str:
    end = record.find(b"\0")
    raw = record if end < 0 else record[:end]
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def record(text: str) -> bytes:
    """One record: ``text`` cut to 255 bytes (never inside a character), NUL-padded to 256.

    A NUL inside the text would end it early for the original client: it becomes a space.
    """
    raw = text.replace("\0", " ").encode("utf-8")
    if len(raw) > TEXT:
        raw = raw[:TEXT].decode("utf-8", errors="ignore").encode("utf-8")
    return raw + b"\0" * (RECORD - len(raw))


def records(prefix: str, text: str) -> bytes:
    """``prefix + text`` in as many records as it takes, each starting with ``prefix``."""
    room = TEXT - len(prefix.encode("utf-8"))
    raw = text.replace("\0", " ").encode("utf-8")
    out = []
    while True:
        piece = raw[:room].decode("utf-8", errors="ignore")
        out.append(record(prefix + piece))
        raw = raw[len(piece.encode("utf-8")) :]
        if not raw or not piece:
            return b"".join(out)


def get_reply(entries: Iterable[tuple[int, int, str]]) -> str:
    """``GET 1 0 -1 ``: one status per id by position from id 0 (0 FREE, 1 BUSY, -1 none),
    each followed by a space, cut to fit the record. A client waiting for ``MATCH`` is
    FREE here (a ``CONNECT`` pairs with it); names are not shown."""
    status = {cid: state == BUSY for cid, state, _ in entries}
    top = max(status, default=0)
    out = ["GET "]
    size = 4
    for cid in range(top + 1):
        word = ("1 " if status[cid] else "0 ") if cid in status else "-1 "
        if size + len(word) > TEXT:
            break
        out.append(word)
        size += len(word)
    return "".join(out)


#: ``CONNECT`` failures in the original's words.
CONNECT_ERRORS = {
    ErrorCode.OFFLINE: "CONNECT OFFLINE",
    ErrorCode.SELF: "CONNECT SELF",
    ErrorCode.BUSY: "CONNECT BUSY",
    ErrorCode.TALKING: "CONNECT TALK",
}
#: The prefix of a record the original client prints as a line of text.
SAY = "SEND "

#: The reply to ``PING`` on the legacy port.
PONG = SAY + "PONG"

#: The reply to ``HELP`` on the legacy port, a record per line: its own words only
#: (no BYE, no MSG, no GET FREE: it never sees those).
HELP = (
    "GET: the status of every id from 0 on (0 free, 1 busy, -1 nobody)",
    "CONNECT <id>: start a session with a free client",
    "#GOODBYE#: end the session; both of you stay connected",
    "#CLOSE#: disconnect",
    "PING: check that the server answers (PONG)",
    "HELP: this list",
    "in a session every other line goes to your partner",
)

INVALID = "INVALID COMMAND"
TERMINATED = "TERMINATED"
ABORT = "ABORT"
OUTAGE = "OUTAGE"


def error_reply(code: ErrorCode) -> str:
    """What the original client hears for an ``ERROR``; everything else was an invalid command."""
    return CONNECT_ERRORS.get(code, INVALID)


def say(text: str) -> bytes:
    """``text`` in ``SEND`` records: what the original client prints as it is."""
    return records(SAY, text)


def help_records() -> bytes:
    """The reply to ``HELP``: one ``SEND`` record per line of ``HELP``."""
    return b"".join(say(line) for line in HELP)


def sniff(head: bytes) -> bool | None:
    """Whether the first bytes a client sent to the line port are the original client's
    record: ``True``, ``False``, or ``None`` while there are too few bytes to tell.

    The original client writes 256 bytes at once: the text it was given (a
    line break at its end at most), a NUL, then padding, maybe garbage. So
    the first 256 bytes must hold a NUL with no line break before it (but
    one ending the text), and before the NUL some text without control
    characters. A v1 line ends at its ``\\n`` with no NUL before it.
    """
    head = head[:RECORD]
    nul = head.find(b"\0")
    newline = head.find(b"\n")
    if newline >= 0 and not 0 <= nul <= newline + 1:
        return False  # a line ended first
    if len(head) < RECORD:
        return None
    if nul < 0:
        return False
    try:
        text = head[:nul].rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(" " <= c != "\x7f" for c in text)


def wrong_port(legacy_port: int | None) -> bytes:
    """What a legacy client that connected to the line port reads before it is closed:
    one record it prints, naming the port it should use (``None``: there is none)."""
    if legacy_port is None:
        where = "it has no port for this client (--legacy-port)"
    else:
        where = f"this client connects to port {legacy_port}"
    return record(f"{SAY}wrong port: this is the server's port for protocol v1; {where}")
