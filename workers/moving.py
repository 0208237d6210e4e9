"""A client on its way from one worker to another: all its new worker needs to go on.

Built by ``ClientProtocol.export`` and read by ``ClientProtocol.arriving``, and
nowhere else; it crosses between workers pickled, beside the socket
(``workers.migrate``). No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipc import messages as m
from wire.budget import Budget
from wire.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Moving:
    """One client's state in flight, with the session it moves for."""

    #: the session the move is for (its partner is on the receiving worker)
    session: int
    cid: int
    #: its unanswered request (the CONNECT that formed the session, if it asked)
    request: m.ToMatchmakerRequest | None
    #: lines decoded and not yet handled, in order
    ready: tuple[str | ErrorCode, ...]
    #: its decoder, holding the bytes read and not yet decoded
    decoder: Any
    #: seconds since it last sent anything, for --idle-timeout
    idle: float
    #: output made for it and not yet written
    out: bytes
    #: the newest session it has heard of
    last_session: int
    #: when the matchmaker gave it its id (``Welcome.since``)
    since: int = 0
    #: what it may still send (``--rate``), settled to when it left; None: no budget
    budget: Budget | None = None
    #: its name (``NAMED``), "" for none
    name: str = ""
