"""The matchmaker process: worker reports in, table decisions, messages out.

No rules of its own: every decision is ``ClientTable``'s. This module only
turns queue messages into table calls and table results into queue messages,
batching the replies per worker until its inbox is empty.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ipc import messages as m
from ipc.channel import Receiver, Sender
from ipc.errors import ProtocolError
from ipc.replies import clients_line
from matchmaker.proc import child_setup, exit_on_sigterm
from matchmaker.table import ClientTable, Entry, Session

log = logging.getLogger("matchmaker.service")

#: A client's address: (worker index, key on that worker).
Addr = tuple[int, int]


class Matchmaker:
    """Applies worker reports to the table and queues what each worker must hear."""

    def __init__(self, table: ClientTable[Addr], outboxes: list[Sender]) -> None:
        self.table = table
        self.outboxes = outboxes
        self._handlers: dict[type, Callable[[int, Any], None]] = {
            m.Register: self._register,
            m.Get: self._get,
            m.Connect: self._connect,
            m.Relay: self._relay,
            m.Goodbye: self._goodbye,
            m.Drop: self._drop,
        }

    def handle(self, worker: int, batch: list[m.ToMatchmaker]) -> None:
        handlers = self._handlers
        for message in batch:
            handlers[type(message)](worker, message)

    def flush(self) -> None:
        for outbox in self.outboxes:
            outbox.flush()

    def _to(self, entry: Entry[Addr], message: m.ToWorker) -> None:
        self.outboxes[entry.addr[0]].send(message)

    def _register(self, worker: int, msg: m.Register) -> None:
        try:
            entry = self.table.register((worker, msg.key))
        except ProtocolError as exc:
            self.outboxes[worker].send(m.Refuse(msg.key, exc.line()))
            return
        self._to(entry, m.Welcome(msg.key, entry.id))

    def _get(self, worker: int, msg: m.Get) -> None:
        entry = self.table.get(msg.cid)
        if entry is not None:
            self._to(
                entry, m.Answer(entry.addr[1], clients_line(self.table.clients(msg.free_only)))
            )

    def _connect(self, worker: int, msg: m.Connect) -> None:
        me = self.table.get(msg.cid)
        if me is None:
            return  # the requester left while its CONNECT was in flight
        try:
            session = self.table.connect(msg.cid, msg.target)
        except ProtocolError as exc:
            self._to(me, m.Answer(me.addr[1], exc.line()))
            return
        # The target hears first: on a shared worker the requester's queued lines
        # are relayed the moment it is paired, and the target must be BUSY by then.
        self._paired(session.b, session.a, session.id, requested=False)
        self._paired(session.a, session.b, session.id, requested=True)

    def _paired(self, end: Entry[Addr], peer: Entry[Addr], sid: int, requested: bool) -> None:
        self._to(end, m.Paired(end.addr[1], sid, peer.id, peer.addr[0], peer.addr[1], requested))

    def _relay(self, worker: int, msg: m.Relay) -> None:
        peer = self.table.partner(msg.cid, msg.session)
        if peer is not None:  # else the session ended while the line was in flight
            self._to(peer, m.Deliver(peer.addr[1], msg.session, msg.text))

    def _goodbye(self, worker: int, msg: m.Goodbye) -> None:
        me = self.table.get(msg.cid)
        # The requester hears ENDED as the answer to its goodbye, even a stale one (the
        # partner ended the session first): its worker ignored the partner's ENDED.
        self._tell_ended(msg.cid, self.table.goodbye(msg.cid, msg.session))
        if me is not None:
            self._to(me, m.Answer(me.addr[1], f"ENDED {msg.peer}"))

    def _drop(self, worker: int, msg: m.Drop) -> None:
        dropped = self.table.drop(msg.cid)
        if dropped is None:
            return
        entry, ended = dropped
        self._tell_ended(msg.cid, ended)
        if msg.answer:
            self._to(entry, m.Refuse(entry.addr[1], "BYE"))

    def _tell_ended(self, leaver: int, session: Session[Addr] | None) -> None:
        """Tell the end that did not leave (the leaver was told by its worker)."""
        if session is None:
            return
        stays, left = (session.b, session.a) if session.a.id == leaver else (session.a, session.b)
        self._to(stays, m.Ended(stays.addr[1], session.id, left.id))


def run(
    max_clients: int,
    inbox: Receiver,
    outboxes: list[Sender],
    orphaned: Callable[[], bool],
) -> None:
    """Serve until SIGTERM or ``orphaned()``, which is checked at least once a second."""
    matchmaker = Matchmaker(ClientTable(max_clients), outboxes)
    while not orphaned():
        first = inbox.get(timeout=1.0)
        if first is None:
            continue
        for worker, batch in [first, *inbox.drain()]:
            matchmaker.handle(worker, batch)
        matchmaker.flush()


def main(log_level: str, max_clients: int, inbox_q: Any, outbox_qs: list[Any]) -> None:
    """Entry point of the matchmaker process (spawned by the supervisor)."""
    parent = child_setup("matchmaker", log_level)
    exit_on_sigterm()
    outboxes = [Sender(q) for q in outbox_qs]
    try:
        run(max_clients, Receiver(inbox_q), outboxes, lambda: os.getppid() != parent)
    finally:
        for outbox in outboxes:
            outbox.close()
