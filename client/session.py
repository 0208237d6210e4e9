"""The client's view of its connection: who it is, whether it is chatting, how it ended.

No I/O, sockets or clocks here. The I/O shell (``client/app.py``) feeds every
parsed server line to ``ClientSession.receive`` and every typed line to
``ClientSession.submit``, and does what they return. The view only follows the
server: it never decides the protocol, so a view that lags behind (a
``CONNECTED`` still in flight) can at worst refuse an alias locally.
"""

from __future__ import annotations

import datetime
import enum

from client import aliases, render
from client.aliases import Send
from client.render import Output, Tone
from wire import commands, replies
from wire.errors import ErrorCode, ProtocolError


class Outcome(enum.Enum):
    """How the connection ended."""

    #: still connected
    RUNNING = "running"
    #: the server answered our ``#CLOSE#`` with ``BYE``
    CLOSED = "closed"
    #: the server refused us before ``WELCOME`` (``ERROR FULL``, ``ERROR TOO_MANY``)
    REFUSED = "refused"
    #: the server announced it is shutting down (``OUTAGE``)
    OUTAGE = "outage"
    #: the connection closed without ``BYE`` or ``OUTAGE``
    LOST = "lost"

    @property
    def exit_code(self) -> int:
        """The process exit code: 0 closed, 1 refused, 3 the server went away."""
        return _EXIT_CODES[self]


#: 1 is also the code for a failed connect; 2 is argparse's for usage errors.
_EXIT_CODES = {
    Outcome.RUNNING: 0,
    Outcome.CLOSED: 0,
    Outcome.REFUSED: 1,
    Outcome.OUTAGE: 3,
    Outcome.LOST: 3,
}


#: What ``submit`` returns, in order: lines to send and lines to show.
Step = Send | Output


class ClientSession:
    """Tracks own id, FREE/BUSY and partner from the server's lines, and renders them."""

    def __init__(self, *, table: bool = False, name: str = "") -> None:
        #: our id, from ``WELCOME``
        self.me: int | None = None
        #: our name, from ``NAMED``
        self.name = ""
        #: every client of the last ``CLIENTS`` (id -> name, "" for none): for showing
        #: names beside ids, and for Tab after ``/connect``
        self.names: dict[int, str] = {}
        #: in the line of ``MATCH``, from ``WAITING`` until ``CONNECTED`` or ``CANCELLED``
        self.waiting = False
        #: lines to send of our own accord (``NAME`` for ``--name``, after ``WELCOME``)
        self.outbox: list[str] = []
        self._take_name = name
        #: the session partner, from ``CONNECTED`` until ``ENDED``
        self.partner: int | None = None
        #: set once the connection is over
        self.outcome = Outcome.RUNNING
        #: whether a ``#CLOSE#`` went out (no need to send another at the end)
        self.sent_close = False
        #: render ``CLIENTS`` as a table (interactive) instead of one line
        self.table = table

    @property
    def busy(self) -> bool:
        """Whether we are in a session, as far as the server has told us."""
        return self.partner is not None

    @property
    def running(self) -> bool:
        """Whether the connection is still open as far as we know."""
        return self.outcome is Outcome.RUNNING

    def prompt(self) -> str:
        """The prompt: who we are and where we are, e.g. ``[7 FREE]> ``, ``[7 ann -> 3 bo]> ``."""
        if not self.running:
            return "[closed]> "
        if self.me is None:
            return "[connecting]> "
        me = f"{self.me} {self.name}" if self.name else str(self.me)
        if self.partner is not None:
            return f"[{me} -> {self.label(self.partner)}]> "
        return f"[{me} {'WAITING' if self.waiting else 'FREE'}]> "

    def label(self, cid: int) -> str:
        """A client as shown: its id, and its name if the last listing had one."""
        name = self.names.get(cid)
        return f"{cid} {name}" if name else str(cid)

    def receive(self, reply: replies.Reply, when: datetime.time) -> list[Output]:
        """Apply one server line to the view; return how to show it."""
        ended = None
        match reply:
            case replies.Welcome(cid):
                self.me = cid
                if self._take_name:
                    self.outbox.append(f"NAME {self._take_name}")
            case replies.Connected(peer):
                self.partner = peer
                self.waiting = False
            case replies.Waiting():
                self.waiting = True
            case replies.Cancelled():
                self.waiting = False
            case replies.Named(name):
                self.name = name
            case replies.Clients(entries):
                self.names = {cid: name for cid, _, name in entries}
                if self.me in self.names:
                    self.name = self.names[self.me]
            case replies.Ended(peer):
                ended = peer
                if self.partner == peer:
                    self.partner = None
            case replies.Bye():
                self.partner = None
                self._finish(Outcome.CLOSED)
            case replies.Outage():
                self._finish(Outcome.OUTAGE)
            case replies.Error(ErrorCode.FULL | ErrorCode.TOO_MANY) if self.me is None:
                self._finish(Outcome.REFUSED)
        partner = ended if ended is not None else self.partner
        return render.render(
            reply, me=self.me, partner=partner, when=when, table=self.table, names=self.names
        )

    def take_outbox(self) -> list[str]:
        """Lines to send of our own accord, once."""
        out, self.outbox = self.outbox, []
        return out

    def connection_lost(self) -> None:
        """The server closed the connection (EOF or reset)."""
        self._finish(Outcome.LOST)

    def _finish(self, outcome: Outcome) -> None:
        if self.outcome is Outcome.RUNNING:  # the first cause wins
            self.outcome = outcome

    def submit(self, text: str) -> list[Step]:
        """What to do with text the user entered: lines to send, lines to show.

        Text with line breaks (a paste) becomes several lines, each mapped on
        its own.
        """
        steps: list[Step] = []
        for line in aliases.split_lines(text):
            action = aliases.translate(line, busy=self.busy)
            if isinstance(action, aliases.Refuse):
                steps.append(Output(Tone.ERROR, f"error: {action.reason}"))
                continue
            if isinstance(action, aliases.ShowHelp):
                steps.extend(Output(Tone.INFO, row) for row in aliases.help_lines())
                if action.send is None:
                    continue
                action = Send(action.send)
            if self._is_close(action.line):
                self.sent_close = True
            steps.append(action)
        return steps

    def _is_close(self, line: str) -> bool:
        if self.busy:
            return isinstance(commands.parse_busy(line), commands.Close)
        try:
            return isinstance(commands.parse_free(line), commands.Close)
        except ProtocolError:
            return False
