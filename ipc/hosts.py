"""What one host's matchmaker tells another's, through that host's Redis stream.

No I/O here. Each host reads one stream (``mm:inbox:<node>``); every entry
has one field ``m``, a ``|``-separated record whose first letter says what it
is. The Lua scripts in ``matchmaker.shared`` write ``P`` and ``E`` (a decision
about two clients is one atomic step, and its news is written in that step);
the matchmakers write ``L`` and ``C`` (lines and their confirmations are not
decisions: only the host of the partner needs them, in order).

Text goes last and is never split, so a line may hold any ``|``.
"""

from __future__ import annotations

from typing import NamedTuple


class PairedWith(NamedTuple):
    """Client ``cid`` (on the reading host) is in ``session`` with ``peer`` on host ``node``."""

    cid: int
    session: int
    peer: int
    node: str


class EndedBy(NamedTuple):
    """``session`` of client ``cid`` (here) with ``peer`` is over (goodbye, close, host lost)."""

    cid: int
    session: int
    peer: int


class Line(NamedTuple):
    """Client ``cid`` (here) gets ``text``, line ``seq`` of its partner in ``session``."""

    cid: int
    session: int
    seq: int
    text: str


class Confirmed(NamedTuple):
    """The partner of ``cid`` (here) has its lines of ``session`` up to ``seq``."""

    cid: int
    session: int
    seq: int


Event = PairedWith | EndedBy | Line | Confirmed


def encode(event: Event) -> str:
    if type(event) is Line:
        return f"L|{event.cid}|{event.session}|{event.seq}|{event.text}"
    if type(event) is Confirmed:
        return f"C|{event.cid}|{event.session}|{event.seq}"
    if type(event) is EndedBy:
        return f"E|{event.cid}|{event.session}|{event.peer}"
    assert type(event) is PairedWith
    return f"P|{event.cid}|{event.session}|{event.peer}|{event.node}"


def decode(record: str) -> Event:
    """The event ``record`` holds; ``ValueError`` for anything else (a foreign writer)."""
    kind, _, rest = record.partition("|")
    if kind == "L":
        cid, session, seq, text = rest.split("|", 3)
        return Line(int(cid), int(session), int(seq), text)
    if kind == "C":
        cid, session, seq = rest.split("|")
        return Confirmed(int(cid), int(session), int(seq))
    if kind == "E":
        cid, session, peer = rest.split("|")
        return EndedBy(int(cid), int(session), int(peer))
    if kind == "P":
        cid, session, peer, node = rest.split("|", 3)
        return PairedWith(int(cid), int(session), int(peer), node)
    raise ValueError(f"not an event: {record[:80]!r}")
