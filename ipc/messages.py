"""What crosses the queues between the workers and the matchmaker process.

No I/O here. Messages are ``NamedTuple``s: immutable, typed, and pickled as
plain tuples, which is several times cheaper than dataclasses on the relay
path. They travel in batches, one list per event-loop tick (``ipc.channel``).

Workers name their clients by *key*, a number the worker never reuses; the
matchmaker names them by id. A worker addresses the matchmaker by id, the
matchmaker addresses a worker's client by key, so a message for a client that
has gone can never reach the next client given the same id. Every message of
a session carries the session's id so a late one can be recognised and dropped.
"""

from __future__ import annotations

from typing import NamedTuple

# ---- worker -> matchmaker ------------------------------------------------------


class Register(NamedTuple):
    """A new connection on this worker wants an id."""

    key: int


class Get(NamedTuple):
    """Client ``cid`` sent ``GET`` (``GET FREE`` with ``free_only``)."""

    cid: int
    free_only: bool


class Connect(NamedTuple):
    """Client ``cid`` sent ``CONNECT target``."""

    cid: int
    target: int


class Relay(NamedTuple):
    """Client ``cid`` said ``text`` in ``session``; its partner is on another worker."""

    cid: int
    session: int
    text: str


class Goodbye(NamedTuple):
    """Client ``cid`` sent ``#GOODBYE#`` in ``session`` with ``peer``; it waits for ``ENDED``."""

    cid: int
    session: int
    peer: int


class Drop(NamedTuple):
    """Client ``cid`` is gone (``#CLOSE#``, EOF, reset, or cut by a limit).

    With ``answer`` the client still waits for its ``BYE``: it is sent once the id
    is free, so nobody who hears of the client's departure can still see it listed.
    """

    cid: int
    answer: bool = False


# ---- matchmaker -> worker ------------------------------------------------------


class Welcome(NamedTuple):
    """Connection ``key`` is client ``cid`` now."""

    key: int
    cid: int


class Answer(NamedTuple):
    """The reply line to the request the client ``key`` has pending (``CLIENTS``, ``ERROR``)."""

    key: int
    line: str


class Refuse(NamedTuple):
    """Connection ``key`` gets the line (``ERROR FULL``, ``BYE``) and is closed."""

    key: int
    line: str


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
    """Client ``key`` gets ``MSG text`` if it is still in ``session``."""

    key: int
    session: int
    text: str


class Ended(NamedTuple):
    """``session`` of client ``key`` with ``peer`` is over, if the client still is in it."""

    key: int
    session: int
    peer: int


ToMatchmaker = Register | Get | Connect | Relay | Goodbye | Drop
ToWorker = Welcome | Answer | Refuse | Paired | Deliver | Ended
