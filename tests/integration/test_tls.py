"""The TLS port (``--tls-port``) and ``python -m client --tls``, with certificates made here.

A TLS client is a client like any other once its handshake is done: same ids,
same protocol, sessions with plain clients. Its socket cannot move between
workers, so its sessions across workers are relayed. Whatever comes to the
wrong port, or stalls in its handshake, is closed without costing anyone else.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import trustme

from tests.integration.harness import TIMEOUT, Client, Server, pair
from tests.integration.test_client_pipe import run_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The server's certificate and key, and the CA that signed them, as files."""
    where = tmp_path_factory.mktemp("pki")
    cert = ca.issue_cert("localhost")  # not 127.0.0.1: a name the client must refuse
    files = {"cert": where / "cert.pem", "key": where / "key.pem", "ca": where / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(files["cert"], append=True)
    cert.private_key_pem.write_to_path(files["key"])
    ca.cert_pem.write_to_path(files["ca"])
    return files


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def tls_flags(pki: dict[str, Path], *more: str) -> tuple[str, ...]:
    return ("--tls-port", "0", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), *more)


@pytest.fixture
def tls_server(start_server: Callable[..., Server], pki: dict[str, Path]) -> Server:
    return start_server(*tls_flags(pki, "--max-line", "64"))


def worker_fds(server: Server) -> list[int]:
    return [psutil.Process(server.pid_of(f"worker {i}")).num_fds() for i in (1, 2)]


def wait_for(what: Callable[[], bool], why: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.02)  # polling a log or the process table: nothing to wait on


def test_a_tls_client_and_a_plain_client_chat_across_workers_relayed(tls_server, trusting):
    """Neither end moves: the TLS one cannot, so the session is relayed."""
    server = tls_server
    a = server.tls_client(trusting)
    b = server.client()
    assert a.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert (a.id, b.id) == (1, 2)
    where = (server.worker_of(a), server.worker_of(b))
    assert where[0] != where[1]
    a.send("GET")
    a.expect("CLIENTS 1=FREE 2=FREE")
    pair(b, a)  # the plain one asks: it does not move either
    a.send("hello over TLS")
    b.expect("MSG hello over TLS")
    b.send("hello in plain")
    a.expect("MSG hello in plain")
    assert (server.worker_of(a), server.worker_of(b)) == where
    a.send("#GOODBYE#")
    a.expect("ENDED 2")
    b.expect("ENDED 1")
    pair(a, b)  # and the TLS one asks
    b.send("again")
    a.expect("MSG again")
    assert (server.worker_of(a), server.worker_of(b)) == where
    a.send("#GOODBYE#")
    a.expect("ENDED 2")
    b.expect("ENDED 1")
    a.send("x" * 65)  # the same limits as on the plain port
    a.expect("ERROR TOO_LONG")
    a.send("#CLOSE#")
    a.expect("BYE")
    b.send("GET")
    b.expect("CLIENTS 2=FREE")


def test_the_wrong_port_fails_cleanly_and_nobody_else_notices(tls_server, trusting):
    """A plain client on the TLS port never gets an id; a TLS client on the plain port
    fails its handshake and its id is free again; a session on both ports goes on."""
    server = tls_server
    a = server.tls_client(trusting)
    b = server.client()  # on the other worker
    # a transport there too: uvloop opens a spare descriptor with its first one (--park)
    b.send("PING")
    b.expect("PONG")
    pair(a, b)
    fds = worker_fds(server)

    plain_on_tls = Client(server.host, server.tls_port)
    plain_on_tls.send("GET FREE")  # not a TLS record: closed at once, without a word
    plain_on_tls.expect_closed()
    plain_on_tls.close()
    raw = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER|record layer failure"):
        trusting.wrap_socket(raw, server_hostname="localhost")  # WELCOME 3 is no TLS
    raw.close()

    a.send("still here")
    b.expect("MSG still here")
    c = server.client()
    assert c.id == 3  # the TLS client on the plain port had 3 for a moment; nobody has 1 or 2
    c.send("GET")
    c.expect("CLIENTS 1=BUSY 2=BUSY 3=FREE")
    c.send("#CLOSE#")
    c.expect("BYE")
    c.expect_closed()
    wait_for(lambda: worker_fds(server) == fds, f"descriptors leaked: {worker_fds(server)}")
    said = (
        r'drop reason=handshake_failed client=none peer=127\.0\.0\.1:\d+ process="worker \d" '
        r"\(TLS handshake failed: .*\(not TLS"
    )
    wait_for(lambda: re.search(said, server.log()) is not None, f"no log line: {server.log()}")


def stall(server: Server) -> socket.socket:
    """A connection to the TLS port that sends the start of a ClientHello and no more."""
    sock = socket.create_connection((server.host, server.tls_port), timeout=TIMEOUT)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    return sock


def test_a_handshake_stalled_midway_is_closed_at_the_deadline(start_server, pki, trusting):
    server = start_server(*tls_flags(pki, "--tls-handshake-timeout", "0.5"))
    a = server.tls_client(trusting)
    with stall(server) as stalled:
        started = time.monotonic()
        a.send("PING")  # nobody waits for it meanwhile
        a.expect("PONG")
        assert stalled.recv(1) == b""
        assert 0.4 < time.monotonic() - started < 3
    wait_for(
        lambda: "TLS handshake not done within 0.5s (--tls-handshake-timeout)" in server.log(),
        f"no log line: {server.log()}",
    )
    # uvloop keeps a /dev/null descriptor open from its first handshake timeout on: count from here
    fds = worker_fds(server)
    stalls = [stall(server) for _ in range(4)]
    for sock in stalls:
        assert sock.recv(1) == b""
        sock.close()
    wait_for(lambda: worker_fds(server) == fds, f"descriptors leaked: {worker_fds(server)}")
    b = server.client()
    assert b.id == 2  # none of them took an id


def test_tls_below_1_2_is_refused(tls_server):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # what this test is about
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    raw = socket.create_connection((tls_server.host, tls_server.tls_port), timeout=TIMEOUT)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        old.wrap_socket(raw, server_hostname="localhost")
    raw.close()


def test_port_off_serves_tls_only(start_server, pki, trusting):
    server = start_server(*tls_flags(pki, "--port", "off"))
    assert server.port == 0 and server.tls_port
    a = server.tls_client(trusting)
    b = server.tls_client(trusting)
    assert server.worker_of(a) != server.worker_of(b)
    pair(a, b)
    a.send("both over TLS")
    b.expect("MSG both over TLS")


def test_a_restarted_matchmaker_keeps_the_tls_client_from_moving(tls_server, trusting):
    """The workers' hellos say which clients cannot move."""
    server = tls_server
    a = server.tls_client(trusting)
    b = server.client()
    old = server.pid_of("matchmaker")
    os.kill(old, signal.SIGKILL)
    pair(b, a)  # answered by the new matchmaker
    assert server.pid_of("matchmaker") != old
    b.send("relayed")
    a.expect("MSG relayed")
    assert server.worker_of(a) != server.worker_of(b)


# ---- python -m client --tls ----------------------------------------------------------------


def test_the_client_verifies_the_server_against_cafile(tls_server, pki):
    done = run_client("GET\n", "localhost", tls_server.tls_port, "--tls", "--cafile",
                      str(pki["ca"]), "--raw")  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "WELCOME 1\nCLIENTS 1=FREE\nBYE\n",
        "",
    )


def test_the_client_refuses_a_certificate_it_cannot_verify(tls_server):
    """Against the system's CAs, which never signed the test CA."""
    done = run_client("GET\n", "localhost", tls_server.tls_port, "--tls", "--raw")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"client: cannot connect to localhost:{tls_server.tls_port}: "
        "the server's certificate cannot be verified ("
    )


def test_the_client_refuses_a_certificate_for_another_name(tls_server, pki):
    done = run_client("GET\n", "127.0.0.1", tls_server.tls_port, "--tls", "--cafile",
                      str(pki["ca"]), "--raw")  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert "certificate cannot be verified" in done.stderr and done.stderr.count("\n") == 1


def test_insecure_connects_with_a_warning(tls_server):
    done = run_client("PING\n", "localhost", tls_server.tls_port, "--tls", "--insecure", "--raw")
    assert (done.returncode, done.stdout) == (0, "WELCOME 1\nPONG\nBYE\n")
    assert done.stderr.startswith("client: warning: --insecure: the server's certificate is not")
    assert done.stderr.count("\n") == 1


def test_the_client_over_tls_on_the_plain_port_says_so(tls_server, pki):
    done = run_client("GET\n", "localhost", tls_server.port, "--tls", "--cafile",
                      str(pki["ca"]))  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "is this the server's TLS port?" in done.stderr
