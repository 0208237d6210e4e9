"""The asyncio shell around ``ClientSession``: a socket, a terminal or a pipe.

Everything protocol-shaped happens in the pure modules; this file only moves
lines. Interactive mode (stdin and stdout are a terminal) reads with a
prompt_toolkit ``PromptSession`` under ``patch_stdout``, so lines from the
server are printed above the prompt and never clobber half-typed input. Pipe
mode sends each stdin line in order and prints each server line as it comes.
Either way the end is the same: send ``#CLOSE#``, wait a bounded time for
``BYE``, and exit with the code of ``Outcome``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.patch_stdout import patch_stdout

from client.aliases import completions
from client.render import Output, Tone, paint
from client.session import ClientSession, Outcome
from client.tls import INSECURE_WARNING, client_context, describe
from wire.codec import LineDecoder, encode
from wire.commands import CLOSE
from wire.errors import ErrorCode
from wire.replies import parse_reply

#: Longest line the client accepts from the server or stdin. ``CLIENTS`` for
#: 10,000 clients is about 100 KB; 16 MiB leaves room for far larger servers and
#: still bounds memory.
MAX_LINE = 16 * 1024 * 1024

#: stdin reads (of up to ``READ_SIZE`` bytes each) queued ahead of the socket in pipe mode.
READ_AHEAD = 16

#: Bytes asked of the socket or stdin per read.
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line chose (see ``client/__main__.py``)."""

    host: str
    port: int
    raw: bool = False
    color: bool = True
    linger: float = 5.0
    connect_timeout: float = 10.0
    interactive: bool = False
    #: over TLS, verifying the server against ``cafile`` (or the system's CAs) unless ``insecure``
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    #: the name to take once connected (``--name``), "" for none
    name: str = ""


class Printer:
    """Where lines go: above the prompt (interactive) or to stdout/stderr (pipe).

    In pipe mode stdout carries only server lines, one per line, so a script
    can read them; local notes and refusals go to stderr.
    """

    def __init__(self, options: Options) -> None:
        self.raw = options.raw
        self.color = options.color and options.interactive
        self.interactive = options.interactive
        self.broken = False  # stdout was closed by its reader

    def server(self, line: str, outputs: list[Output]) -> None:
        """Show one server line: verbatim with ``--raw``, else as rendered."""
        if self.raw:
            self._out(line)
        else:
            for output in outputs:
                self._out(paint(output, color=self.color))

    def local(self, output: Output) -> None:
        """Show a note from the client itself."""
        text = paint(output, color=self.color)
        if self.interactive:
            self._out(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def _out(self, text: str) -> None:
        if self.interactive:  # sys.stdout is patch_stdout's proxy here
            print(text, flush=True)
            return
        if self.broken:
            return
        try:
            sys.stdout.buffer.write(text.encode("utf-8", "replace") + b"\n")
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`| head -1`); keep the exit quiet, as the
            # Python docs advise, and let the caller close the connection.
            self.broken = True
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Shell:
    """One connection: server lines into the session, user lines out to the server."""

    def __init__(
        self,
        session: ClientSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        printer: Printer,
    ) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.printer = printer
        #: called after each server line, e.g. to redraw the prompt
        self.on_change: Callable[[], None] = lambda: None

    async def pump_server(self) -> None:
        """Read and show server lines until the connection is over."""
        decoder = LineDecoder(MAX_LINE)
        while self.session.running:
            try:
                data = await self.reader.read(READ_SIZE)
            except ConnectionError:
                data = b""
            if not data:
                self.session.connection_lost()
                break
            for event in decoder.feed(data):
                if self.session.running:
                    self._on_event(event)
            self.on_change()
        self.writer.close()

    def _on_event(self, event: str | ErrorCode) -> None:
        if isinstance(event, ErrorCode):
            what = "too long" if event is ErrorCode.TOO_LONG else "not UTF-8"
            self.printer.local(Output(Tone.ERROR, f"client: skipped a server line ({what})"))
            return
        now = datetime.datetime.now().time()
        self.printer.server(event, self.session.receive(parse_reply(event), now))
        for line in self.session.take_outbox():  # written at once; drained by the next send
            if not self.writer.is_closing():
                self.writer.write(encode(line))

    async def submit(self, text: str) -> None:
        """Send what the user entered, after alias mapping; show local notes."""
        for step in self.session.submit(text):
            if isinstance(step, Output):
                self.printer.local(step)
            else:
                await self.send(step.line)

    async def send(self, line: str) -> None:
        """Send one line; a dead connection is noticed by ``pump_server``."""
        if not self.session.running or self.writer.is_closing():
            return
        self.writer.write(encode(line))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def close(self, pump: asyncio.Task[None], linger: float, stop: asyncio.Event) -> None:
        """Send ``#CLOSE#`` unless already sent, then wait up to ``linger`` s for the end.

        A further stop signal (a second Ctrl-C) cuts the wait short.
        """
        if not self.session.sent_close:
            self.session.sent_close = True
            await self.send(CLOSE)
        stop.clear()
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({pump, stopped}, timeout=linger, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not pump.done():
            pump.cancel()
            self.writer.close()
            self.printer.local(Output(Tone.ERROR, f"client: no BYE within {linger:g} s; closed"))


async def connect(options: Options) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    """Open the connection, or say in a few words why it failed."""
    tls: ssl.SSLContext | None = None
    if options.tls:
        try:
            tls = client_context(options.cafile, options.insecure)
        except (OSError, ssl.SSLError) as exc:
            return f"cannot use --cafile {options.cafile}: {exc.strerror or exc}"
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(options.host, options.port, ssl=tls),
            options.connect_timeout,
        )
    except ssl.SSLError as exc:
        return describe(exc)
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
            return "unknown host"
        return f"cannot resolve host: {exc.strerror or exc}"
    except TimeoutError:
        return f"no answer within {options.connect_timeout:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


async def run(options: Options) -> int:
    """Connect, talk until the end, and return the exit code."""
    where = f"{options.host}:{options.port}"
    if options.tls and options.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    result = await connect(options)
    if isinstance(result, str):
        print(f"client: cannot connect to {where}: {result}", file=sys.stderr)
        return 1
    reader, writer = result
    session = ClientSession(table=options.interactive and not options.raw, name=options.name)
    shell = Shell(session, reader, writer, Printer(options))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    try:
        if options.interactive:
            await interact(shell, options, stop)
        else:
            await pipe(shell, options, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return finish(session.outcome, where)


def finish(outcome: Outcome, where: str) -> int:
    """Say on stderr why the connection ended, unless we ended it; return the exit code."""
    reason = {
        Outcome.REFUSED: f"cannot connect to {where}: the server is full",
        Outcome.OUTAGE: f"the server at {where} shut down",
        Outcome.LOST: f"the server at {where} closed the connection",
    }.get(outcome)
    if reason is not None:
        print(f"client: {reason}", file=sys.stderr)
    return outcome.exit_code


async def interact(shell: Shell, options: Options, stop: asyncio.Event) -> None:
    """Interactive mode: a prompt that says who and where we are; lines print above it."""
    prompt: PromptSession[str] = PromptSession(
        shell.session.prompt, completer=ConnectCompleter(shell.session), complete_while_typing=False
    )
    shell.on_change = prompt.app.invalidate  # CONNECTED or ENDED change the prompt
    with patch_stdout(raw=True):
        hint = f"connected to {options.host}:{options.port}; /help lists commands, Ctrl-D quits"
        shell.printer.local(Output(Tone.NOTICE, hint))
        pump = asyncio.create_task(shell.pump_server())
        typing = asyncio.create_task(_type_lines(shell, prompt))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({pump, typing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not shell.session.running:
            # The connection is over (OUTAGE, a dead worker): the prompt goes, so the
            # last lines on the screen say why, with no prompt left dangling above them.
            prompt.app.erase_when_done = True
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing  # prompt_toolkit puts the terminal back as the task unwinds
        if not pump.done():
            await shell.close(pump, options.linger, stop)


class ConnectCompleter(Completer):
    """Tab after ``/connect``: the ids and names of the last listing (``aliases.completions``)."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = before.rpartition(" ")[2]
        for text in completions(before, self.session.names):
            yield Completion(text, start_position=-len(word))


async def _type_lines(shell: Shell, prompt: PromptSession[str]) -> None:
    """Prompt for lines until Ctrl-C, Ctrl-D or ``#CLOSE#``, sending each; empty lines
    are skipped. After ``/quit`` no new prompt is drawn: ``BYE`` is the last line."""
    while shell.session.running and not shell.session.sent_close:
        try:
            text = await prompt.prompt_async(handle_sigint=False, set_exception_handler=False)
        except (KeyboardInterrupt, EOFError):
            return
        if text:
            await shell.submit(text)


async def pipe(shell: Shell, options: Options, stop: asyncio.Event) -> None:
    """Pipe mode: send stdin lines in order; at EOF (or a signal) close and wait for BYE."""
    lines: asyncio.Queue[list[str | ErrorCode] | None] = asyncio.Queue(READ_AHEAD)
    start_stdin_reader(asyncio.get_running_loop(), lines)
    pump = asyncio.create_task(shell.pump_server())
    feed = asyncio.create_task(_feed(shell, lines))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({pump, feed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    feed.cancel()
    stopped.cancel()
    if not pump.done():
        await shell.close(pump, options.linger, stop)


async def _feed(shell: Shell, lines: asyncio.Queue[list[str | ErrorCode] | None]) -> None:
    while (batch := await lines.get()) is not None:
        for line in batch:
            if isinstance(line, ErrorCode):
                what = "too long" if line is ErrorCode.TOO_LONG else "not UTF-8"
                shell.printer.local(Output(Tone.ERROR, f"client: skipped an input line ({what})"))
            else:
                await shell.submit(line)
            if shell.printer.broken:
                return


def start_stdin_reader(
    loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[list[str | ErrorCode] | None]
) -> None:
    """Read stdin in a daemon thread and queue its lines, a batch per read; ``None`` marks EOF.

    A thread works for pipes, files and terminals alike (``connect_read_pipe``
    refuses regular files). It uses ``os.read`` on fd 0, not ``sys.stdin``, so
    it holds no lock of the interpreter's that could hang its exit while the
    thread is still blocked in a read. ``lines`` should be bounded: the thread
    waits for room, so a large input is read no faster than it is sent.
    """

    def put(item: list[str | ErrorCode] | None) -> bool:
        # The put is created on the loop's thread: a coroutine made here and dropped
        # by a loop that closes first would print "coroutine was never awaited".
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start() -> None:
            loop.create_task(lines.put(item)).add_done_callback(settled)

        def settled(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                done.cancel()
            else:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(start)
            done.result()
        except Exception:  # the loop closed or dropped the put: the client is exiting
            return False
        return True

    def read() -> None:
        decoder = LineDecoder(MAX_LINE)
        while True:
            try:
                data = os.read(0, READ_SIZE)
            except OSError:
                data = b""
            # a last line without "\n" is still sent: scripts often omit it
            events = decoder.feed(data if data else b"\n" if decoder.pending else b"")
            if events and not put(events):
                return
            if not data:
                put(None)
                return

    threading.Thread(target=read, name="stdin-reader", daemon=True).start()
