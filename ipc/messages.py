"""What crosses the links between the workers and the matchmaker process.

No I/O here. Messages are ``NamedTuple``s: immutable and typed; on the wire
they are plain tuples tagged with their class (``to_wire``), which pickle
several times faster. They travel in batches, one list per event-loop tick
(``ipc.channel``).

Workers name their clients by *key*, a number the worker never reuses; the
matchmaker names them by id. The matchmaker addresses a worker's client by
key, so a message for a client that has gone can never reach the next client
given the same id. A request names its client by both: the matchmaker acts on
it only if that key on that worker still holds the id, so a request from a
socket that lost its id (a moved client refused on landing, say) is never
answered to the id's next holder. Every message of a session carries the
session's id so a late one can be recognised and dropped.

Ids themselves are reused, so a ``CONNECT`` carries when its worker read it,
and each client's id when it was given: a client given the id after the
request was read is not the one it named (``matchmaker.table``). Both are
``time.monotonic_ns()``, one clock for every process on the host, so the
stamp of a client travels with it (``Welcome``, ``ClientState``, ``Placed``):
it stays the one the matchmaker gave it, whichever worker holds it and
whichever matchmaker is running.
"""

from __future__ import annotations

import typing
from typing import Any, NamedTuple

from wire import replies

# ---- worker -> matchmaker ------------------------------------------------------


class Register(NamedTuple):
    """A new connection on this worker wants an id.

    A ``pinned`` one cannot move to another worker (its TLS session lives in
    this process): its sessions across workers are relayed.
    """

    key: int
    pinned: bool = False


class Get(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``GET`` (``GET FREE`` with ``free_only``)."""

    cid: int
    free_only: bool
    key: int


class Connect(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``CONNECT target``; its worker read it at ``asked``.

    ``target`` must have held its id since then at the latest, or it is OFFLINE.
    ``asked`` 0 is the earliest moment: only a client stamped 0 is that old.
    With a ``name`` (``CONNECT <name>``, ``target`` 0) the target is whoever
    holds that name when the matchmaker decides.
    """

    cid: int
    target: int
    key: int
    asked: int = 0
    name: str = ""


class Match(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``MATCH`` (``MATCH NEW`` with ``new``), read at
    ``asked``: when it waits, it waits since then (the order of the line, for a new
    matchmaker)."""

    cid: int
    key: int
    asked: int = 0
    new: bool = False


class Cancel(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``CANCEL``."""

    cid: int
    key: int


class Name(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``NAME name`` (``NAME`` alone: ``name`` is "")."""

    cid: int
    key: int
    name: str


class Relay(NamedTuple):
    """Client ``cid`` said ``text`` in ``session``; its partner is on another worker.

    ``seq`` counts the client's lines in the session from 1; the worker keeps a
    line until the partner's worker confirms it (``Received``), so lines lost
    with a dead matchmaker can be sent again and duplicates recognised.
    """

    cid: int
    session: int
    text: str
    seq: int = 0


class Received(NamedTuple):
    """Client ``cid`` has been handed its partner's lines of ``session`` up to ``seq``."""

    cid: int
    session: int
    seq: int


class Goodbye(NamedTuple):
    """Client ``cid`` (``key`` here) sent ``#GOODBYE#`` in ``session`` with ``peer``.

    It waits for ``ENDED``.
    """

    cid: int
    session: int
    peer: int
    key: int


class Drop(NamedTuple):
    """Client ``cid`` (``key`` here) is gone (``#CLOSE#``, EOF, reset, or cut by a limit).

    With ``answer`` the client still waits for its ``BYE``: it is sent to ``key``
    once the id is free (or at once if the id is not the client's any more), so
    nobody who hears of the client's departure can still see it listed.
    """

    cid: int
    key: int
    answer: bool = False


#: A request that waits for an answer (at most one per client at a time). Each
#: has the client's ``key``: a client that moves to another worker takes its
#: request along under its new key there.
ToMatchmakerRequest = Register | Get | Connect | Match | Cancel | Name | Goodbye | Drop


class Placed(NamedTuple):
    """After a ``Move``: client ``cid`` lives on this worker as ``key`` now.

    Sent by the worker the client moved to, or by the one it was on if the
    socket could not move (then the session is relayed across workers).
    ``request`` is the client's unanswered request: the ``CONNECT`` that formed
    the session, or one a matchmaker that lost track of the move must handle.
    """

    key: int
    cid: int
    session: int
    request: ToMatchmakerRequest | None
    since: int = 0  # when it was given its id (``Welcome.since``)


class Lost(NamedTuple):
    """Client ``cid``, moving to this worker for ``session``, never arrived.

    Its socket or its state could not be taken in: its id is free again,
    unless the matchmaker has freed it already (and maybe given it away).
    """

    cid: int
    session: int


class ClientState(NamedTuple):
    """What a worker knows of one client, for a matchmaker that lost its table."""

    key: int
    cid: int
    session: int  # 0 while FREE
    peer: int
    last_session: int = 0  # the newest session it has heard of, ended or not
    since: int = 0  # when it was given its id (``Welcome.since``)
    pinned: bool = False  # it cannot move to another worker (``Register.pinned``)
    name: str = ""  # its name (``NAMED``), "" for none
    waiting: int | None = None  # in the line of MATCH since then (``Match.asked``)
    new: bool = False  # waiting with MATCH NEW
    last_peer: int = 0  # the partner of its last session, for MATCH NEW


class Hello(NamedTuple):
    """First message on every new link: the worker's clients and their open requests.

    A fresh matchmaker rebuilds its table from the hellos of all workers; each
    request is one the client sent and has had no answer to yet. ``lines`` are
    the lines to partners on other workers not yet confirmed, which the dead
    matchmaker may have lost: they are relayed before any request is answered,
    so a ``#GOODBYE#`` that waits ends its session after them.
    """

    clients: tuple[ClientState, ...]
    requests: tuple[ToMatchmakerRequest, ...]
    lines: tuple[Relay, ...] = ()


# ---- matchmaker -> worker ------------------------------------------------------


class Welcome(NamedTuple):
    """Connection ``key`` is client ``cid`` now, since ``since``.

    The client keeps ``since`` wherever it goes: a new matchmaker must know it.
    """

    key: int
    cid: int
    since: int = 0


class Answer(NamedTuple):
    """The reply to the request the client ``key`` is waiting on (``CLIENTS``, ``ERROR``,
    ``ENDED``). Built with ``of`` and read as ``reply``: typed at both ends, a plain
    tuple in between (``replies.pack``)."""

    key: int
    packed: replies.Packed

    @classmethod
    def of(cls, key: int, reply: replies.Decided) -> Answer:
        return cls(key, replies.pack(reply))

    @property
    def reply(self) -> replies.Decided:
        return replies.unpack(self.packed)


class Refuse(NamedTuple):
    """Connection ``key`` gets the reply (``ERROR FULL``, ``BYE``, ``OUTAGE``) and is
    closed. Built and read as ``Answer`` is."""

    key: int
    packed: replies.Packed

    @classmethod
    def of(cls, key: int, reply: replies.Decided) -> Refuse:
        return cls(key, replies.pack(reply))

    @property
    def reply(self) -> replies.Decided:
        return replies.unpack(self.packed)


class Paired(NamedTuple):
    """Client ``key`` is in ``session`` with ``peer``, who lives at ``peer_worker``/``peer_key``.

    ``requested`` is set on the end that sent the ``CONNECT``: it answers that
    end's pending request.
    """

    key: int
    session: int
    peer: int
    peer_worker: int
    peer_key: int
    requested: bool


class Deliver(NamedTuple):
    """Client ``key`` gets ``MSG text`` if it is still in ``session`` and has not had ``seq``."""

    key: int
    session: int
    text: str
    seq: int = 0


class Confirm(NamedTuple):
    """The partner of client ``key`` has its lines of ``session`` up to ``seq``: forget them."""

    key: int
    session: int
    seq: int


class Move(NamedTuple):
    """Hand client ``key`` (``cid``) to worker ``to``, where its partner in ``session`` is.

    Sent instead of ``Paired`` when a session forms across workers: once one
    socket has moved, the pair is relayed inside one process. Both ends get
    their ``Paired`` after the ``Placed`` that answers this.
    """

    key: int
    cid: int
    session: int
    to: int


class Ended(NamedTuple):
    """``session`` of client ``key`` with ``peer`` is over, if the client still is in it."""

    key: int
    session: int
    peer: int


ToMatchmaker = (
    Register
    | Get
    | Connect
    | Relay
    | Received
    | Goodbye
    | Drop
    | Hello
    | Placed
    | Lost
    | Match
    | Cancel
    | Name
)
ToWorker = Welcome | Answer | Refuse | Paired | Deliver | Confirm | Move | Ended


# ---- on the wire -------------------------------------------------------------------

#: Every message class; its index is its tag on the wire.
CLASSES: tuple[type, ...] = (
    *typing.get_args(ToMatchmaker),
    *typing.get_args(ToWorker),
)
_TAGS = {cls: tag for tag, cls in enumerate(CLASSES)}
_new = tuple.__new__


def to_wire(batch: list[ToMatchmaker | ToWorker]) -> list[tuple[Any, ...]]:
    """A batch as plain tuples ``(tag, *fields)``.

    Pickling a ``NamedTuple`` calls back into Python for each one (its
    ``__getnewargs__``); plain tuples pickle in C, four times faster for a
    typical batch, and a batch is pickled on every hop of every request.
    """
    tags = _TAGS
    return [(tags[type(msg)], *msg) for msg in batch]


def from_wire(batch: list[tuple[Any, ...]]) -> list[Any]:
    """The messages ``to_wire`` made the tuples of."""
    classes = CLASSES
    return [_new(classes[t[0]], t[1:]) for t in batch]
