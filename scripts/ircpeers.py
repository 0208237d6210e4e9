"""The C IRC servers the benchmark measures beside ours (``bench.py --peer inspircd,ngircd``).

Debian's ``inspircd`` (3.x) and ``ngircd`` (26.x) packages, each started per
row in the foreground in a temporary directory with a config generated here:
127.0.0.1 and a free port, no DNS or ident lookups, no persistence, flood
limits and penalties off (every client comes from 127.0.0.1 and sends without
pause, which is what the rows measure; ``python -m matchmaker`` runs with
``--rate 0 --max-per-ip 0 --accept-rate 0`` for the same reason), connection
limits above the largest row, a one-line MOTD and the PID file in that
directory. The config text is made by pure functions (unit-tested); starting,
waiting for the port and stopping (SIGTERM, then SIGKILL) is ``PeerServer``.

The workloads speak IRC to them: each client registers (``NICK b<n>``,
``USER``, done at ``001``), a pair is two nicks that ``PRIVMSG`` each other,
and the C load generator of ``scripts/benchload.py`` drives them in its IRC
dialect (``irc-pingpong``, ``irc-stream``, ``ircconns``).
"""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from scripts import benchload
from scripts.redisproc import free_port

HOST = "127.0.0.1"
#: Seconds a peer may take to listen, and to exit after SIGTERM before SIGKILL.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: Fresh ports to try when another process takes the one chosen before the peer binds it.
PORT_ATTEMPTS = 5
#: Per-client send queue (bytes): our server's --sendq default, and InspIRCd's own example.
SENDQ = 1 << 20
#: Descriptors a peer needs beyond its clients (listener, log, epoll, ...).
FD_MARGIN = 64
#: Seconds between a peer's PINGs to an idle client: longer than any row, so none is sent.
PING_SECONDS = 3600
#: Where Debian installs the daemons (root's PATH has it; other users' often does not).
SBIN = ("/usr/sbin", "/usr/local/sbin")
#: Numerics that end the registration burst: end of MOTD, or no MOTD.
END_OF_MOTD = ("376", "422")


# ---- config text (pure) ------------------------------------------------------------------


def inspircd_config(port: int, directory: Path, clients: int) -> str:
    """``inspircd.conf`` for one run: one client port on 127.0.0.1, no limits in the way.

    The connect class is the whole tuning: ``threshold`` and ``commandrate`` so
    high that no client ever gathers enough command penalty to be slowed
    (``fakelag``) or dropped (``Excess Flood``); ``softsendq`` (the queue at
    which InspIRCd stops reading a client's commands) equal to ``hardsendq``;
    no clone limits (``localmax``, ``globalmax``: every client is 127.0.0.1);
    no DNS (``resolvehostnames``) or ident; no PINGs within a row. No modules
    are loaded, so no connflood, connectban or DNSBL.
    """
    limit = clients + FD_MARGIN
    return f"""<config format="xml">
<server name="bench.invalid" description="bench peer" network="bench">
<admin name="bench" nick="bench" email="bench@bench.invalid">
<bind address="{HOST}" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="60" pingfreq="{PING_SECONDS}"
         hardsendq="{SENDQ}" softsendq="{SENDQ}" recvq="{SENDQ}"
         threshold="4000000" commandrate="4000000000" fakelag="no"
         localmax="{limit}" globalmax="{limit}" maxconnwarn="no" limit="{limit}"
         resolvehostnames="no" useident="no" maxchans="20">
<performance netbuffersize="10240" somaxconn="1024" softlimit="{limit}"
             clonesonconnect="no" quietbursts="yes">
<files motd="{directory / "motd.txt"}">
<pid file="{directory / "inspircd.pid"}">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{directory / "inspircd.log"}">
<whowas groupsize="1" maxgroups="1" maxkeep="1h">
"""


def ngircd_config(port: int, directory: Path, clients: int) -> str:
    """``ngircd.conf`` for one run: one port on 127.0.0.1, no limits in the way.

    ``MaxPenaltyTime = 0`` turns ngIRCd's command penalties off; no connection
    limits (``MaxConnections``, ``MaxConnectionsIP`` 0: none); no DNS, ident
    or PAM; no PINGs within a row; the MOTD is a phrase. ``clients`` only sizes
    nothing here (ngIRCd has no per-class limit), it is there so that both
    generators take the same arguments.
    """
    del clients  # unlimited: MaxConnections = 0
    return f"""[Global]
\tName = bench.invalid
\tInfo = bench peer
\tAdminInfo1 = bench
\tAdminEMail = bench@bench.invalid
\tListen = {HOST}
\tPorts = {port}
\tMotdPhrase = "bench"
\tPidFile = {directory / "ngircd.pid"}
[Limits]
\tMaxConnections = 0
\tMaxConnectionsIP = 0
\tMaxJoins = 0
\tMaxNickLength = 16
\tMaxPenaltyTime = 0
\tPingTimeout = {PING_SECONDS}
\tPongTimeout = {PING_SECONDS}
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
"""


@dataclass(frozen=True)
class Peer:
    """One IRC server the bench can start: its program, package, config and command line."""

    name: str
    program: str
    package: str
    config_name: str
    config: Callable[[int, Path, int], str]
    #: argv after the binary, given the config file's path
    flags: Callable[[Path], list[str]]
    #: clients the conns workload has registering at once (ours: benchload.CONNECT_WINDOW)
    connect_window: int


def _inspircd_flags(config: Path) -> list[str]:
    flags = ["--nofork", "--config", str(config)]
    return flags + (["--runasroot"] if os.geteuid() == 0 else [])


#: InspIRCd completes registrations once a second (its user timer): 1,000 at a time
#: make 10,000 in about 10 s. ngIRCd listens with a backlog of 10 (compiled in): more
#: at once overflow it and wait out a SYN retransmission (1 s, then 3 s, ...).
INSPIRCD_WINDOW, NGIRCD_WINDOW = 1000, 8

PEERS = {
    "inspircd": Peer(
        "inspircd", "inspircd", "inspircd", "inspircd.conf", inspircd_config, _inspircd_flags,
        INSPIRCD_WINDOW,
    ),
    "ngircd": Peer(
        "ngircd", "ngircd", "ngircd", "ngircd.conf", ngircd_config,
        lambda config: ["--nodaemon", "--config", str(config)], NGIRCD_WINDOW,
    ),
}  # fmt: skip


def parse_peers(values: list[str]) -> list[str]:
    """``--peer`` values (repeated or comma lists) -> known names, in order, once each."""
    out: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in PEERS:
                raise ValueError(f"unknown --peer {name!r} (known: {', '.join(PEERS)})")
            if name not in out:
                out.append(name)
    return out


def find_binary(name: str) -> str | None:
    """The peer's program on PATH, else in /usr/sbin or /usr/local/sbin; None if missing."""
    program = PEERS[name].program
    found = shutil.which(program)
    if found:
        return found
    for directory in SBIN:
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    return None


def version(name: str) -> str:
    """The peer's ``--version`` first word (``InspIRCd-3.15.0-debian``, ``ngIRCd 26.1``)."""
    found = find_binary(name)
    if found is None:
        return "not installed"
    done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10)
    words = (done.stdout or done.stderr).split()
    if len(words) >= 2 and words[0] == "ngIRCd":
        return f"ngIRCd {words[1].split('-')[0]}"
    return words[0] if words else "unknown version"


def not_installed(name: str) -> str:
    return f"--peer {name}: not installed (apt-get install {PEERS[name].package})"


# ---- IRC lines (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One IRC line: ``[:prefix] COMMAND params... [:trailing]``."""

    prefix: str
    command: str
    params: tuple[str, ...]

    @property
    def nick(self) -> str:
        """The sender's nick (``nick!user@host`` prefix), or the server's name."""
        return self.prefix.partition("!")[0]


def parse_message(line: str) -> Message:
    """Split an IRC line (without its CR LF) into prefix, command and parameters."""
    prefix = ""
    rest = line
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
    rest, colon, trailing = rest.partition(" :")
    if not colon and rest.startswith(":"):  # no middle parameters, only a trailing one
        rest, colon, trailing = "", ":", rest[1:]
    words = rest.split()
    if not words:
        raise ValueError(f"not an IRC line: {line!r}")
    params = tuple(words[1:]) + ((trailing,) if colon else ())
    return Message(prefix, words[0].upper(), params)


def registration(nick: str) -> bytes:
    """What a client sends to register: ``NICK``, then ``USER`` (RFC 2812 3.1)."""
    return f"NICK {nick}\r\nUSER u 0 * :bench {nick}\r\n".encode()


def privmsg(nick: str, text: str) -> bytes:
    return f"PRIVMSG {nick} :{text}\r\n".encode()


# ---- the process -------------------------------------------------------------------------


class PeerServer:
    """A running peer on 127.0.0.1 in its own temporary directory; ``stop`` reaps it.

    Ready means its process holds a socket listening on its port. It inherits
    this process's descriptor limit, raised first to ``clients`` and a margin.
    """

    def __init__(self, name: str, clients: int, parent: Path | None = None) -> None:
        self.peer = PEERS[name]
        found = find_binary(name)
        if found is None:
            raise RuntimeError(not_installed(name))
        self.binary = found
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        if os.geteuid() == 0:  # ngIRCd drops root for "nobody", who must write its PID file
            os.chmod(self.dir, 0o1777)
        self.log_path = self.dir / "stderr.log"
        self.clients = clients
        self.host, self.port = HOST, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []
        try:
            for _ in range(PORT_ATTEMPTS):
                if self._launch(free_port()):
                    return
            raise RuntimeError(f"{name} found no free port in {PORT_ATTEMPTS} attempts")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _launch(self, port: int) -> bool:
        """Start on ``port``; whether it listens there (False: it exited, the port taken)."""
        (self.dir / "motd.txt").write_text("bench\n")
        config = self.dir / self.peer.config_name
        config.write_text(self.peer.config(port, self.dir, self.clients))
        self.argv = [self.binary, *self.peer.flags(config)]
        benchload.raise_fd_limit(self.clients + FD_MARGIN)  # the peer inherits it
        with open(self.log_path, "ab") as log:
            self.proc = proc = subprocess.Popen(
                self.argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a signal at the bench is not its
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                proc.wait()
                if "in use" in self.log_tail():
                    return False
                raise RuntimeError(f"{self.peer.name} exited at start:\n{self.log_tail()}")
            if listening(proc.pid, port):
                self.port = port
                return True
            time.sleep(0.05)  # polling the process table: nothing to wait on
        raise RuntimeError(f"{self.peer.name} did not listen within {START_TIMEOUT} s")

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL to its group after STOP_TIMEOUT, reap; the exit status."""
        status = None
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                status = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
        return status

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        texts = []
        for path in (self.log_path, self.dir / "inspircd.log"):
            try:
                texts += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(texts)

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port``."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


# ---- clients -----------------------------------------------------------------------------


class IrcClient(benchload.Client):
    """A registered IRC client; ``cid`` is the number in its nick ``b<cid>``."""

    @property
    def nick(self) -> str:
        return f"b{self.cid}"

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def message(self) -> Message:
        return parse_message(self.read_line())

    def sync(self, token: str) -> None:
        """PING the server and read up to its PONG: whatever it sent before is read."""
        self.send_raw(f"PING :{token}\r\n".encode())
        while True:
            msg = self.message()
            if msg.command == "PONG" and msg.params[-1:] == (token,):
                return
            if msg.command == "ERROR":
                raise RuntimeError(f"{self.nick}: {msg}")


def irc_open(host: str, port: int, n: int) -> IrcClient:
    """Connect and send the registration of nick ``b<n>``; ``registered`` waits for it."""
    sock = socket.create_connection((host, port), timeout=benchload.REPLY_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = IrcClient(sock, cid=n, port=sock.getsockname()[1])
    try:
        client.send_raw(registration(client.nick))
    except BaseException:
        sock.close()
        raise
    return client


def registered(client: IrcClient) -> None:
    """Wait for ``client``'s ``001``, then read the rest of its registration burst.

    Many at once: InspIRCd completes registrations on its once-a-second timer,
    so clients registered one after the other would take a second each.
    """
    try:
        while True:
            msg = client.message()
            if msg.command == "PING":  # some servers check the client first
                client.send_raw(f"PONG :{msg.params[-1] if msg.params else ''}\r\n".encode())
            elif msg.command == "001":
                break
            elif msg.command == "ERROR" or (msg.command.isdigit() and msg.command >= "400"):
                raise RuntimeError(f"{client.nick} not registered: {msg}")
        client.sync("registered")  # the rest of the burst: 002..005, LUSERS, MOTD
    except BaseException:
        client.close()
        raise


def irc_connect(host: str, port: int, n: int) -> IrcClient:
    """A client registered as ``b<n>``, every line of its registration read."""
    client = irc_open(host, port, n)
    registered(client)
    return client


def open_pairs(host: str, port: int, count: int) -> benchload.PairSet:
    """``count`` pairs of registered clients ``b0``/``b1``, ``b2``/``b3``, ...

    A pair is just two nicks that PRIVMSG each other: no session to enter.
    A peer is one process, so every pair is ``same``.
    """
    clients: list[IrcClient] = []
    try:
        for n in range(2 * count):
            clients.append(irc_open(host, port, n))
        for c in clients:
            registered(c)
    except BaseException:
        for c in clients:
            c.close()
        raise
    pairs: list[tuple[benchload.Client, benchload.Client]] = [
        (clients[i], clients[i + 1]) for i in range(0, len(clients), 2)
    ]
    return benchload.PairSet(pairs, groups={0: count}, holders=1)


def run_conns(exe: Path, server: PeerServer, clients: int, workdir: Path) -> benchload.ConnsResult:
    """``clients`` idle IRC clients (nicks ``c<n>``), each connected at its ``001``.

    RSS and PSS as for our server (``benchload.run_conns``): before the first
    client, on a server that has registered one, and while all are connected.
    There is no GET in IRC: no GET is timed, ``entries`` is the clients counted.
    """
    path = workdir / "samples-conns.bin"
    one = irc_connect(server.host, server.port, clients + 1)
    one.close()
    rss_before = settled_rss(server.pid)
    argv = [str(exe), "ircconns", server.host, str(server.port), str(clients)]
    argv += [str(server.peer.connect_window), "0", "0", str(path)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        reader = benchload.LineReader(proc)
        meter = benchload.Meter(benchload.tree(server.pid), [psutil.Process(proc.pid)])
        deadline = time.monotonic() + 300 + benchload.REPLY_TIMEOUT
        _, elapsed, ok, failed = reader.line(deadline).split()
        usage = meter.stop()
        got = benchload.parse_fields(reader.line(deadline))
        if reader.line(deadline) != "READY":
            raise RuntimeError("the load generator lost its step")
        procs = benchload.tree(server.pid)
        rss_after, pss_after = benchload.total_rss(procs), benchload.total_pss(procs)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=benchload.REPLY_TIMEOUT)
        path.unlink(missing_ok=True)
        return benchload.ConnsResult(
            clients=clients,
            ok=int(ok),
            failed=int(failed),
            connect_seconds=int(elapsed) / 1e9,
            rss_before=rss_before,
            rss_after=rss_after,
            pss_after=pss_after,
            entries=int(ok),
            bad=got["bad"],
            samples=array.array("q"),
            usage=usage,
            log=benchload.stderr_of(proc),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def settled_rss(pid: int, bound: float = 5.0) -> int:
    """Total RSS of the peer once it stops moving (within ``bound`` seconds)."""
    deadline = time.monotonic() + bound
    last = benchload.total_rss(benchload.tree(pid))
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = benchload.total_rss(benchload.tree(pid))
        if abs(now - last) <= last // 200:
            return now
        last = now
    return last
