import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, TIMEOUT, pair, title

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_two_clients_on_two_workers_chat(server):
    a, b = server.client(), server.client()
    assert (a.id, b.id) == (1, 2)
    assert {server.worker_of(a), server.worker_of(b)} == {1, 2}
    pair(a, b)
    a.send("hello")
    b.expect("MSG hello")
    b.send("#GOODBYE#")
    b.expect("ENDED 1")
    a.expect("ENDED 2")


def test_the_asyncio_loop_serves_too(start_server):
    """uvloop is the default where installed; asyncio's own loop must work the same."""
    server = start_server("--loop", "asyncio")
    a, b = server.client(), server.client()
    assert server.worker_of(a) != server.worker_of(b)
    pair(a, b)
    a.send("hello")
    b.expect("MSG hello")
    b.send("#CLOSE#")
    b.expect("BYE")
    a.expect(f"ENDED {b.id}")


def test_a_taken_port_prints_its_error_alone():
    """The server logged ``stopped`` before the real error, though nothing had started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"matchmaker: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_every_process_of_the_server_has_its_title(server):
    """multiprocessing's resource tracker ran as one more process, without a title."""
    titles = sorted(title(p) for p in server.children())
    assert titles == [
        "matchmaker: acceptor",
        "matchmaker: matchmaker",
        "matchmaker: worker 1",
        "matchmaker: worker 2",
    ]


def maps_uvloop(pid: int) -> bool:
    """Whether the process has uvloop's compiled loop mapped: it imported uvloop."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any("/uvloop/loop." in line for line in maps.splitlines())


def test_two_workers_share_the_modules_the_supervisor_loaded_for_them(start_server):
    """Imported in each worker, the workers' modules were a private copy in each (about
    6 MB of PSS a worker); the supervisor loads them once before it forks them."""
    two = start_server("--loop", "uvloop", workers=2)
    assert maps_uvloop(two.proc.pid)
    assert all(maps_uvloop(two.pid_of(f"worker {n}")) for n in (1, 2))
    one = start_server("--loop", "uvloop", workers=1)
    assert not maps_uvloop(one.proc.pid)
    assert not maps_uvloop(one.pid_of("acceptor"))
    assert maps_uvloop(one.pid_of("worker 1"))


def shape(line: str) -> str:
    """A line of the server's output with what changes from run to run taken out."""
    line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ ", "", line)
    line = re.sub(r"^\S+ INFO \d+ workers", "INFO N workers", line)
    return re.sub(r"listening on [\d.]+:\d+$", "listening on HOST:PORT", line)


def test_the_readme_shows_what_a_start_prints():
    """The README's transcripts left out the log line printed before ``listening on``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "$ python -m matchmaker --port 5000 --legacy-port 5001\n"
    shown = readme.split(command, 1)[1].split("$ ", 1)[0].splitlines()
    proc = subprocess.Popen(
        [sys.executable, "-m", "matchmaker", "--host", "127.0.0.1", "--port", "0"]
        + ["--legacy-port", "0", "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        while not printed or not printed[-1].startswith("listening on"):
            line = proc.stdout.readline()  # the test's timeout bounds a server that hangs
            assert line, printed
            printed.append(line.rstrip("\n"))
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)
    assert [shape(line) for line in printed] == [shape(line) for line in shown]
