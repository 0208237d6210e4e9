"""The load generator's IRC dialect (``irc-pingpong``, ``irc-stream``) against a relay
played by the test over socket pairs: the exact lines it sends, the PRIVMSG lines it
reads, a server PING answered, and every line counted as lost, out of order or wrong.

Needs a C compiler (the bench does too); no IRC server.
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from scripts import benchload

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None, reason="needs gcc or cc"
)

#: A line of the helper: PRIVMSG, the partner's nick, a 63-byte line (sequence, time, x...).
SENT = re.compile(rb"PRIVMSG b(\d+) :(\d{10} \d{19} x{32})\r\n")
NS = 1_000_000_000


def relay(exe: Path, mode: str, tmp: Path, noise: bytes = b"") -> tuple[dict[str, int], str, int]:
    """Run the helper on pair b7/b8 for 0.2 s, relaying its PRIVMSGs as a server would.

    Returns its result fields, its stderr, and how many lines were relayed. A PING
    goes to b7 first; ``noise`` is sent to b7 after it.
    """
    a_helper, a_server = socket.socketpair()
    b_helper, b_server = socket.socketpair()
    nick = {a_server: 7, b_server: 8}
    partner = {a_server: b_server, b_server: a_server}
    argv = [str(exe), f"irc-{mode}", "0", str(NS // 5), str(NS), str(tmp / "samples.bin")]
    fds = (a_helper.fileno(), b_helper.fileno())
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{fds[0]} {fds[1]} 7 8\n".encode())
        proc.stdin.close()
        a_helper.close()
        b_helper.close()
        a_server.sendall(b"PING :bench.invalid\r\n" + noise)
        pending = {a_server: b"", b_server: b""}
        out = b""
        relayed = pongs = 0
        deadline = time.monotonic() + 10
        while not out.endswith(b"\n") or not out.splitlines()[-1].startswith(b"R "):
            left = deadline - time.monotonic()
            assert left > 0, f"the helper did not finish: {out!r}"
            ready, _, _ = select.select([a_server, b_server, proc.stdout], [], [], left)
            if proc.stdout in ready:
                data = proc.stdout.read1(65536)  # type: ignore[attr-defined]
                assert data, "the helper exited early"
                out += data
            for sock in (s for s in ready if s is not proc.stdout):
                pending[sock] += sock.recv(65536)
                *lines, pending[sock] = pending[sock].split(b"\r\n")
                for line in lines:
                    if line == b"PONG :bench.invalid":
                        assert sock is a_server
                        pongs += 1
                        continue
                    got = SENT.fullmatch(line + b"\r\n")
                    assert got is not None, f"not a PRIVMSG of the helper: {line!r}"
                    assert int(got[1]) == nick[partner[sock]], line  # to the other end
                    frm = nick[sock]
                    partner[sock].sendall(
                        b":b%d!u@127.0.0.1 PRIVMSG b%s :%s\r\n" % (frm, got[1], got[2])
                    )
                    relayed += 1
        assert pongs == 1
        proc.wait(5)
        fields = benchload.parse_fields(out.decode().splitlines()[-1])
        return fields, benchload.stderr_of(proc), relayed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        a_server.close()
        b_server.close()


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return benchload.build_helper(tmp_path_factory.mktemp("helper"))


@pytest.mark.parametrize("mode", ["pingpong", "stream"])
def test_irc_lines_round_trip_through_a_relay_with_none_lost(exe: Path, tmp_path: Path, mode: str):
    fields, err, relayed = relay(exe, mode, tmp_path)
    assert err == ""
    assert (fields["lost"], fields["ooo"], fields["errors"], fields["unfinished"]) == (0, 0, 0, 0)
    assert fields["ops"] > 0
    assert fields["sent"] == relayed  # every line the helper sent came back to it
    assert fields["recv"] == relayed


def test_a_line_that_is_no_privmsg_counts_as_an_error(exe: Path, tmp_path: Path):
    fields, err, _ = relay(exe, "pingpong", tmp_path, noise=b":srv NOTICE b7 :hello\r\n")
    assert fields["errors"] == 1
    assert "unexpected line: :srv NOTICE b7 :hello" in err
    assert (fields["lost"], fields["ooo"]) == (0, 0)


def test_the_helper_refuses_irc_modes_it_does_not_speak(exe: Path, tmp_path: Path):
    done = subprocess.run(
        [str(exe), "irc-churn", "0", "1", "1", str(tmp_path / "s.bin")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2
    assert done.stderr == "IRC: only pingpong and stream\n"
