"""Faults the server must survive: dead children, hostile bytes, idle and greedy clients."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from importlib.machinery import EXTENSION_SUFFIXES

import psutil
import pytest

from matchmaker.roles import BOOT_ERROR
from tests.integration.harness import ROOT, Client, pair, title, two_clients
from wire.legacy import RECORD, sniff

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll a process-table fact (nothing to block on) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def new_pid(server, name: str, old: int) -> int | None:
    """The pid of the process titled ``matchmaker: <name>`` if it is not ``old``."""
    for p in psutil.Process(server.proc.pid).children():
        if title(p) == f"matchmaker: {name}" and p.pid != old:
            return p.pid
    return None


def test_every_process_names_itself(server):
    children = psutil.Process(server.proc.pid).children()
    titles = sorted(title(p) for p in children if title(p).startswith("matchmaker: "))
    assert titles == [
        "matchmaker: acceptor",
        "matchmaker: matchmaker",
        "matchmaker: worker 1",
        "matchmaker: worker 2",
    ]
    assert title(psutil.Process(server.proc.pid)) == "matchmaker: supervisor"


def test_a_killed_acceptor_is_replaced_on_the_same_socket(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    old = server.pid_of("acceptor")
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)
    c = server.client()  # the same port answers again: the connection waited in the backlog
    assert time.monotonic() - started < 1.0
    assert old not in [p.pid for p in server.children()]
    assert c.id not in (a.id, b.id)
    a.send("still here")  # the session survived untouched
    b.expect("MSG still here")
    c.quiet()


@pytest.mark.parametrize("migrate", ["off", "on"])
def test_a_killed_matchmaker_is_replaced_and_nobody_notices(start_server, migrate):
    """The table is rebuilt from the workers: no client is disconnected, ids and sessions
    stay, and lines sent across workers around the gap all arrive once, in order."""
    server = start_server("--migrate", migrate)
    a, b, c, d = server.client(), server.client(), server.client(), server.client()
    e = server.client()
    assert [server.worker_of(x) for x in (a, b, c, e)] == [1, 2, 1, 1]
    pair(a, b)  # across workers: through the matchmaker, or in one worker once a moved
    assert (server.worker_of(a) == server.worker_of(b)) == (migrate == "on")
    pair(c, e)  # one worker: lines never touch it
    lines = [f"line {i}" for i in range(4000)]
    old = server.pid_of("matchmaker")
    a.send("".join(x + "\n" for x in lines[:2000]).encode())
    b.send("".join(x + "\n" for x in lines[:2000]).encode())
    os.kill(old, signal.SIGKILL)
    a.send("".join(x + "\n" for x in lines[2000:]).encode())
    b.send("".join(x + "\n" for x in lines[2000:]).encode())
    c.send("local")
    d.send("GET")  # asked while there is no matchmaker: answered by the next one
    assert [b.line() for _ in lines] == [f"MSG {x}" for x in lines]
    assert [a.line() for _ in lines] == [f"MSG {x}" for x in lines]
    e.expect("MSG local")
    d.expect(f"CLIENTS {a.id}=BUSY {b.id}=BUSY {c.id}=BUSY {d.id}=FREE {e.id}=BUSY")
    assert server.pid_of("matchmaker") != old
    f = server.client()
    assert f.id == 6
    pair(d, f)
    d.send("new session")
    f.expect("MSG new session")
    a.send("#GOODBYE#")
    a.expect(f"ENDED {b.id}")
    b.expect(f"ENDED {a.id}")
    a.quiet()
    b.quiet()


@pytest.mark.timeout(300)
def test_a_matchmaker_killed_30_times_under_traffic_loses_no_session_and_no_line(start_server):
    """Six deaths of the matchmaker within 30 s used to halt the server (OUTAGE to every
    client), and each worker slot had links for 15 restarts. Each kill here comes once
    the previous replacement answers, while lines cross it in both directions."""
    server = start_server("--migrate", "off")  # every line between workers crosses it
    a, b, c, d, e, probe = (server.client() for _ in range(6))
    f = server.client()
    assert [server.worker_of(x) for x in (a, b, c, d, e, f)] == [1, 2, 1, 2, 1, 1]
    pairs = [(a, b), (d, c), (e, f)]  # across workers both ways, and within one
    for x, y in pairs:
        pair(x, y)
    clients = f"CLIENTS {a.id}=BUSY {b.id}=BUSY {c.id}=BUSY {d.id}=BUSY {e.id}=BUSY"
    clients += f" {probe.id}=FREE {f.id}=BUSY"
    survivors = [psutil.Process(server.proc.pid)]
    survivors += [psutil.Process(server.pid_of(f"worker {i}")) for i in (1, 2)]
    descriptors = [p.num_fds() for p in survivors]
    old = server.pid_of("matchmaker")
    for kill in range(30):
        sent = {}
        for x, y in pairs:
            for src, dst in ((x, y), (y, x)):
                lines = [f"kill {kill} from {src.id} line {i}" for i in range(150)]
                sent[dst] = [f"MSG {line}" for line in lines]
                src.send("".join(line + "\n" for line in lines[:100]).encode())
        os.kill(old, signal.SIGKILL)
        for x, y in pairs:
            for src, dst in ((x, y), (y, x)):
                src.send("".join(line[4:] + "\n" for line in sent[dst][100:]).encode())
        probe.send("GET")  # only a replacement can answer it
        probe.expect(clients)
        for dst, lines in sent.items():
            assert [dst.line() for _ in lines] == lines, f"kill {kill}"
        new = server.pid_of("matchmaker")
        assert new != old
        old = new
    assert [p.num_fds() for p in survivors] == descriptors  # each old link closed
    log = server.log()
    assert log.count("matchmaker restarted (pid") == 30
    assert "restarting it in 1.0 s" in log  # backed off, and never more than a second
    for x, y in pairs:
        x.send("#GOODBYE#")
        x.expect(f"ENDED {y.id}")
        y.expect(f"ENDED {x.id}")
    probe.send("GET")
    probe.expect(clients.replace("BUSY", "FREE"))


#: ``python -c`` that runs the server with one role's module swapped for a missing one.
BROKEN_ROLE = """
import sys
from matchmaker import roles
setattr(roles, sys.argv[1], "tests.integration.no_such_module")
from matchmaker.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


#: What the supervisor says when it stops because a child failed to start.
STOPPED = re.escape(" failed to start (its log above says why); stopping the server")


def run_to_its_end(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a server (``python ARGS``) until it stops by itself: its status and its stderr.

    Fails unless every process of its session has gone with it.
    """
    proc = subprocess.Popen(
        [sys.executable, *args, "--host", "127.0.0.1", "--port", "0", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def group_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, what=f"every process of the server to exit: {err}")
    return proc.returncode, err


@pytest.mark.parametrize(
    ("role", "title"),
    [("MATCHMAKER", "matchmaker"), ("WORKER", "worker [12]"), ("ACCEPTOR", "acceptor")],
)
def test_a_child_that_cannot_import_its_module_stops_the_server(role, title):
    """A child that fails while booting would only fail again: no restart, a clear line."""
    status, err = run_to_its_end("-c", BROKEN_ROLE, role)
    assert status == BOOT_ERROR, err
    assert "No module named 'tests.integration.no_such_module'" in err
    assert re.search(title + STOPPED, err)
    assert "restarted" not in err


def test_a_child_that_cannot_start_its_event_loop_stops_the_server(tmp_path):
    """--loop uvloop with a uvloop installed but broken: each worker fails as it boots."""
    package = tmp_path / "uvloop"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('this uvloop is broken')\n")
    (package / f"loop{EXTENSION_SUFFIXES[0]}").write_bytes(b"")  # found, as if compiled
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    status, err = run_to_its_end("-m", "matchmaker", "--loop", "uvloop", env=env)
    assert status == BOOT_ERROR, err
    assert re.search("worker [12] failed to start\n", err)  # its own log line, and why:
    assert "ImportError: this uvloop is broken" in err
    assert re.search("worker [12]" + STOPPED, err)


def test_idle_clients_are_closed(start_server):
    server = start_server("--idle-timeout", "0.5")
    quiet, chatty = server.client(), server.client()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # chatty keeps talking, quiet says nothing
        chatty.quiet()
    quiet.expect("ERROR IDLE")
    quiet.expect_closed()
    chatty.quiet()


def test_garbage_bytes_get_errors_and_hurt_nobody(start_server, placement):
    server = start_server("--max-line", "256")
    a, b = two_clients(server, placement)
    pair(a, b)
    rng = random.Random(7)
    for _ in range(200):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
        line = noise.replace(b"\n", b"") + b"\n"
        if sniff((line + b"PING\n")[:RECORD]):
            continue  # the original client's record: told the legacy port (test_legacy.py)
        c = server.connect()
        c.welcome()
        c.send(line)
        reply = c.line()
        assert reply.startswith("ERROR "), reply
        c.quiet()
        c.close()
        server.opened.remove(c)
    a.send("unharmed")
    b.expect("MSG unharmed")


def test_nul_bytes_are_text(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.send(b"nul\x00inside\n")
    b.expect("MSG nul\x00inside")


def test_a_line_sent_one_byte_at_a_time(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in b"one byte at a time\n":
        a.sock.send(bytes([byte]))
    b.expect("MSG one byte at a time")


def test_a_10mb_line_costs_one_error(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.send(b"x" * (10 << 20) + b"\nafter\n")
    a.expect("ERROR TOO_LONG")
    b.expect("MSG after")


def test_reset_mid_line_ends_the_session(server, placement):
    a, b = two_clients(server, placement)
    pair(a, b)
    a.send(b"a line cut in the mid")
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.sock.close()
    b.expect(f"ENDED {a.id}")  # the unfinished line is never delivered


def test_thousands_of_connect_disconnect_cycles_leak_nothing(server):
    keeper, other = server.client(), server.client()
    # A transport in each worker first: uvloop opens a spare descriptor with its first
    # one, and a client that only connects and goes may need none (--park).
    for client in (keeper, other):
        client.send("PING")
        client.expect("PONG")
    workers = [psutil.Process(server.pid_of(f"worker {i}")) for i in (1, 2)]
    fds_before = [w.num_fds() for w in workers]
    for i in range(1500):
        s = socket.create_connection((server.host, server.port))
        if i % 3 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif i % 3 == 1:
            s.shutdown(socket.SHUT_WR)
        s.close()
    # every one of them has been registered and dropped once the ids are back to 3
    probe = Client(server.host, server.port)
    server.opened.append(probe)
    wait_for(lambda: probe.welcome() and True, what="welcome")
    deadline = time.monotonic() + 20
    while True:
        probe.send("GET")
        line = probe.line()
        if line == f"CLIENTS {keeper.id}=FREE {other.id}=FREE {probe.id}=FREE":
            break
        assert time.monotonic() < deadline, line[:200]
    wait_for(
        lambda: [w.num_fds() for w in workers] <= [n + 1 for n in fds_before],
        what="worker descriptors back to where they were",
    )
    keeper.quiet()
    other.quiet()


def test_out_of_descriptors_the_acceptor_backs_off_and_recovers(server):
    a = server.client()
    acceptor = psutil.Process(server.pid_of("acceptor"))
    limits = acceptor.rlimit(psutil.RLIMIT_NOFILE)
    open_fds = {int(fd) for fd in os.listdir(f"/proc/{acceptor.pid}/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    acceptor.rlimit(psutil.RLIMIT_NOFILE, (lowest_free, limits[1]))  # not one more descriptor
    try:
        waiting = Client(server.host, server.port)  # queued in the listen backlog
        server.opened.append(waiting)
        acceptor.cpu_percent()
        time.sleep(1.0)  # measuring CPU use over a second, not synchronising
        assert acceptor.cpu_percent() < 50, "the acceptor spins on EMFILE"
        assert acceptor.is_running()
    finally:
        acceptor.rlimit(psutil.RLIMIT_NOFILE, limits)
    waiting.welcome()
    a.quiet()
    assert "backing off" in server.log()


def test_a_killed_worker_is_replaced_and_only_its_clients_are_lost(start_server):
    """Pairs on the surviving worker chat on without a lost or doubled line; partners of the
    dead worker's clients get ENDED; the replacement serves new clients."""
    server = start_server("--migrate", "off")  # so that a session spans the two workers
    a, b, c, d = server.client(), server.client(), server.client(), server.client()
    assert [server.worker_of(x) for x in (a, b, c, d)] == [1, 2, 1, 2]
    e = server.client()  # worker 1
    pair(a, c)  # both on worker 1: must survive
    pair(e, b)  # across: e survives, b dies
    survivors_sent = [f"line {i}" for i in range(3000)]
    a.send("".join(x + "\n" for x in survivors_sent[:1500]).encode())
    old = server.pid_of("worker 2")
    os.kill(old, signal.SIGKILL)
    a.send("".join(x + "\n" for x in survivors_sent[1500:]).encode())
    e.expect(f"ENDED {b.id}")
    assert [c.line() for _ in survivors_sent] == [f"MSG {x}" for x in survivors_sent]
    for dead in (b, d):
        with pytest.raises(AssertionError, match="closed"):
            dead.line()

    wait_for(lambda: new_pid(server, "worker 2", old), what="a new worker 2")
    e.send("GET")
    e.expect(f"CLIENTS {a.id}=BUSY {c.id}=BUSY {e.id}=FREE")
    # the acceptor skips worker 2 until the new one is serving
    fresh: list[Client] = []
    wait_for(
        lambda: fresh.append(server.client()) or server.worker_of(fresh[-1]) == 2,
        what="a client on the new worker 2",
    )
    other = server.client()
    pair(fresh[-1], other)
    fresh[-1].send("after the restart")
    other.expect("MSG after the restart")
    on_two = server.client()
    if server.worker_of(on_two) != 2:
        on_two = server.client()
    assert server.worker_of(on_two) == 2
    pair(e, on_two)
    e.send("cross again")
    on_two.expect("MSG cross again")


def test_one_signal_delivered_twice_still_shuts_down_gracefully(start_server):
    """timeout(1) signals the command and its process group: the supervisor gets two."""
    server = start_server()
    a = server.client()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    a.expect("OUTAGE")
    assert "second signal" not in server.log()


def test_children_exit_when_the_supervisor_is_killed(start_server):
    """No orphans: each child notices its parent is gone within about a second."""
    server = start_server()
    a = server.client()
    children = [p for p in server.children() if title(p).startswith("matchmaker: ")]
    assert len(children) == 4
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    a.expect("OUTAGE")  # an orphaned worker still says goodbye properly
    a.expect_closed()


def test_a_second_sigint_kills_at_once(start_server):
    """The first SIGINT waits for b to read what it is owed (up to 30 s); the second does not."""
    server = start_server("--shutdown-timeout", "60", "--linger", "60", "--sendq", str(1 << 30))
    a, b = server.client(), server.client()
    pair(a, b)
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.send(b"x" * 1000 + b"\n")
    b.expect("MSG " + "x" * 1000)
    # 20 MB that b will not read; sendall returns once the server has taken most of it
    a.send((b"y" * 1000 + b"\n") * 20_000)
    server.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT: shutting down" in server.log(), what="the first SIGINT")
    time.sleep(0.3)  # a person's second Ctrl-C, later than one signal delivered twice
    server.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    assert not server.wait_survivors()


@pytest.mark.parametrize("migrate", ["on", "off"])
def test_slow_reader_memory_stays_bounded(start_server, migrate):
    """A reader that never reads is cut once it has read nothing for --stall-timeout;
    no worker's memory follows the flood (relayed, the sender's worker grew by 302 MB)."""
    server = start_server("--sendq", str(1 << 20), "--stall-timeout", "1", "--migrate", migrate)
    a, b = server.client(), server.client()
    pair(a, b)
    workers = [psutil.Process(server.pid_of(f"worker {i}")) for i in (1, 2)]
    before = sum(w.memory_info().rss for w in workers)
    line = b"m" * 4000 + b"\n"
    a.sock.setblocking(False)
    sent, rest, peak = 0, b"", 0
    while f"ENDED {b.id}".encode() not in a.buf:
        try:
            rest = rest or line * 16
            n = a.sock.send(rest)
            rest, sent = rest[n:], sent + n
        except BlockingIOError:
            pass
        try:
            a.buf += a.sock.recv(1 << 16)
        except BlockingIOError:
            pass
        peak = max(peak, sum(w.memory_info().rss for w in workers))
        assert sent < 1 << 30, "b was never cut"
    a.sock.setblocking(True)
    assert peak - before < 32 << 20, f"the workers grew by {(peak - before) >> 20} MiB"
