"""The WebSocket port (``--ws-port``): protocol v1 in text frames, the page, the upgrade.

A WebSocket client is a client like any other once upgraded: same ids,
same words, sessions with TCP clients. It cannot move between workers, so
its sessions across workers are relayed. What is not a good upgrade gets an
HTTP status and costs no id.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import trustme

from tests.integration.harness import TIMEOUT, Server, pair
from tests.wsclient import Rejected, WsClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wait_for(what: Callable[[], bool], why: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.02)  # polling a log or the process table: nothing to wait on


def http(server: Server, request: bytes) -> bytes:
    """Send ``request`` to the WebSocket port; everything it answers until it closes."""
    with socket.create_connection((server.host, server.ws_port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return got


@pytest.fixture
def web(start_server: Callable[..., Server]) -> Server:
    return start_server("--ws-port", "0", "--max-line", "64")


def test_a_websocket_client_chats_with_a_tcp_client_across_workers_relayed(web):
    """Neither end moves: the WebSocket one cannot, so the session is relayed."""
    a = web.ws_client()
    b = web.client()
    assert (a.id, b.id) == (1, 2)
    where = (web.worker_of(a), web.worker_of(b))  # type: ignore[arg-type]
    assert where[0] != where[1]
    a.send("GET")
    a.expect("CLIENTS 1=FREE 2=FREE")
    a.send("CONNECT 2")
    a.expect("CONNECTED 2")
    b.expect("CONNECTED 1")
    a.send("hello over a WebSocket")
    b.expect("MSG hello over a WebSocket")
    b.send("hello over TCP")
    a.expect("MSG hello over TCP")
    a.send("x" * 65)  # the same --max-line as on the plain port, and the session goes on
    a.expect("ERROR TOO_LONG")
    a.send_bytes(b"\x00binary")
    a.expect("ERROR ENCODING")
    a.send("two\nlines")  # a line break inside a frame splits it, as on TCP
    b.expect("MSG two")
    b.expect("MSG lines")
    assert (web.worker_of(a), web.worker_of(b)) == where  # type: ignore[arg-type]
    b.send("#GOODBYE#")
    b.expect("ENDED 1")
    a.expect("ENDED 2")
    pair(b, a)  # the TCP one asks: it does not move either
    b.send("again")
    a.expect("MSG again")
    a.send("#CLOSE#")
    a.expect("BYE")
    closed = a.expect_closed()
    assert (closed.code, closed.reason) == (1000, "BYE")
    b.expect("ENDED 1")
    b.send("GET")
    b.expect("CLIENTS 2=FREE")


def test_every_error_a_websocket_client_can_earn(web):
    a = web.ws_client()
    b = web.ws_client()
    c = web.client()
    for line, reply in [
        ("FOO", "ERROR UNKNOWN_COMMAND FOO"),
        ("CONNECT", "ERROR USAGE CONNECT <id>"),
        ("CONNECT 1", "ERROR SELF"),
        ("CONNECT 9", "ERROR OFFLINE 9"),
        ("#GOODBYE#", "ERROR NOT_IN_CHAT"),
        ("y" * 65, "ERROR TOO_LONG"),
    ]:
        a.send(line)
        a.expect(reply)
    a.send_bytes(b"\xff\xfe")
    a.expect("ERROR ENCODING")
    a.send("z" * 1_000_000)  # far past a read's worth: discarded as it streams in
    a.expect("ERROR TOO_LONG")
    pair(c, b)
    a.send("CONNECT 2")
    a.expect("ERROR BUSY 2")
    b.send("CONNECT 3")  # its first line after c paired it: a CONNECT that crossed c's
    b.expect("ERROR TALKING 3")
    b.send("CONNECT 3")  # any later one is chat
    c.expect("MSG CONNECT 3")
    a.send("PING")
    a.expect("PONG")


def test_a_text_frame_that_is_not_utf8_fails_the_connection_as_rfc_6455_asks(web):
    a = web.ws_client()
    b = web.client()
    pair(b, a)  # type: ignore[arg-type]
    a.send("fine")
    b.expect("MSG fine")
    a.sock.sendall(bytes([0x81, 0x81, 0, 0, 0, 0, 0xFF]))  # FIN, text, masked (by 0): 0xff
    a.expect("BYE")  # counts as its #CLOSE#
    assert a.expect_closed().code == 1007
    b.expect("ENDED 1")


def test_a_full_server_and_an_idle_client_are_told_and_closed_with_a_reason(start_server):
    server = start_server("--ws-port", "0", "--max-clients", "1", "--idle-timeout", "0.5")
    a = server.ws_client()
    full = WsClient(server.host, server.ws_port)
    server.opened.append(full)  # type: ignore[arg-type]
    full.expect("ERROR FULL")
    closed = full.expect_closed()
    assert (closed.code, closed.reason) == (1013, "ERROR FULL")
    a.expect("ERROR IDLE", timeout=3)
    closed = a.expect_closed()
    assert (closed.code, closed.reason) == (1008, "ERROR IDLE")
    wait_for(lambda: "drop reason=idle client=1" in server.log(), server.log())


def test_per_address_limits_refuse_an_upgrade_with_an_http_status(start_server):
    server = start_server("--ws-port", "0", "--max-per-ip", "1")
    server.ws_client()
    with pytest.raises(Rejected) as refused:
        WsClient(server.host, server.ws_port)
    assert refused.value.status == 429
    assert b"ERROR TOO_MANY" in refused.value.body


def test_the_page_and_every_other_request(web):
    got = http(web, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/html; charset=utf-8" in head
    assert b"content-security-policy: default-src 'none'; script-src 'sha256-" in head
    assert b"cache-control: no-cache" in head
    assert body.startswith(b"<!doctype html>") and body.rstrip().endswith(b"</html>")
    head = http(web, b"HEAD /?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    for request, status in [
        (b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n", b"404 Not Found"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405 Method Not Allowed"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", b"426 Upgrade Required"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
         b"400 Bad Request"),  # no Sec-WebSocket-Key
        (b"\x16\x03\x01 not HTTP at all\r\n\r\n", b"400 Bad Request"),
    ]:  # fmt: skip
        assert http(web, request).startswith(b"HTTP/1.1 " + status), request
    assert "reason=handshake_failed" in web.log()
    c = web.ws_client()  # none of them took an id, nor a seat
    c.send("GET")
    c.expect("CLIENTS 1=FREE")


def test_an_upgrade_from_another_origin_is_forbidden(start_server):
    server = start_server("--ws-port", "0", "--ws-origin", "https://chat.example.org")
    with pytest.raises(Rejected) as refused:
        WsClient(server.host, server.ws_port, origin=f"http://127.0.0.1:{server.ws_port}")
    assert refused.value.status == 403
    wait_for(lambda: "drop reason=origin client=none" in server.log(), server.log())
    server.ws_client(origin="https://chat.example.org")
    server.ws_client()  # no Origin: no browser page, nothing to guard


def test_by_default_only_the_pages_own_origin_may_upgrade(web):
    own = f"http://127.0.0.1:{web.ws_port}"
    web.ws_client(origin=own)
    for other in ("http://evil.example", f"https://127.0.0.1:{web.ws_port}"):
        with pytest.raises(Rejected) as refused:
            WsClient(web.host, web.ws_port, origin=other)
        assert refused.value.status == 403


def test_an_upgrade_not_requested_in_time_is_closed_and_costs_nothing(start_server):
    server = start_server("--ws-port", "0", "--ws-handshake-timeout", "0.5")
    workers = [psutil.Process(server.pid_of(f"worker {i}")) for i in (1, 2)]

    def stall(count: int) -> None:
        stalled = []
        for _ in range(count):
            sock = socket.create_connection((server.host, server.ws_port), timeout=TIMEOUT)
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            stalled.append(sock)
        started = time.monotonic()
        for sock in stalled:
            assert sock.recv(1) == b""
            sock.close()
        assert time.monotonic() - started < 3

    stall(2)  # a worker's first timer and first abort open what they keep: count from here
    fds = [w.num_fds() for w in workers]
    stall(4)
    wait_for(lambda: server.log().count("drop reason=handshake_timeout") == 6, server.log())
    assert "no HTTP request within 0.5s (--ws-handshake-timeout)" in server.log()
    wait_for(lambda: [w.num_fds() for w in workers] == fds, "descriptors leaked")
    c = server.ws_client()
    c.send("GET")
    c.expect("CLIENTS 1=FREE")


def test_a_client_that_answers_no_ping_is_closed(start_server):
    server = start_server("--ws-port", "0", "--ws-ping-interval", "0.3")
    quiet = server.ws_client()  # reads nothing, so answers no ping
    alive = server.ws_client()
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:  # reading answers each ping
        alive.send("PING")
        alive.expect("PONG")
        time.sleep(0.1)  # a person's pace: the pings must come between the lines
    wait_for(lambda: "drop reason=no_pong client=1" in server.log(), server.log())
    closed = quiet.expect_closed()
    assert (closed.code, closed.reason) == (1001, "no pong")
    alive.send("GET")
    alive.expect("CLIENTS 2=FREE")


def test_shutdown_sends_outage_and_a_going_away_close(web):
    a = web.ws_client()
    web.proc.send_signal(2)
    a.expect("OUTAGE")
    closed = a.expect_closed()
    assert (closed.code, closed.reason) == (1001, "OUTAGE")


def test_with_a_certificate_the_port_is_wss_and_https(start_server, tmp_path: Path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "both.pem")
    pem = str(tmp_path / "both.pem")
    server = start_server("--ws-port", "0", "--tls-cert", pem, "--tls-key", pem)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    a = server.ws_client(origin=f"https://127.0.0.1:{server.ws_port}", tls=ctx)
    b = server.client()
    pair(a, b)  # type: ignore[arg-type]
    b.send("over wss")
    a.expect("MSG over wss")
    with socket.create_connection((server.host, server.ws_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
    with pytest.raises(Rejected):  # the page's own origin is https:// here
        WsClient(server.host, server.ws_port, origin=f"http://127.0.0.1:{server.ws_port}", tls=ctx)


def test_a_websocket_client_chats_with_a_tcp_client_of_another_host(start_server, redis_server):
    """Across hosts (``--redis``) a WebSocket client is a client like any other."""
    flags = ("--redis", redis_server.url, "--node-ttl", "5")
    h1 = start_server(*flags, "--node", "h1", "--ws-port", "0")
    h2 = start_server(*flags, "--node", "h2")
    a = h1.ws_client()
    b = h2.client()
    a.send("GET")
    a.expect(f"CLIENTS {a.id}=FREE {b.id}=FREE")
    a.send(f"CONNECT {b.id}")
    a.expect(f"CONNECTED {b.id}")
    b.expect(f"CONNECTED {a.id}")
    a.send("from a browser on h1")
    b.expect("MSG from a browser on h1")
    b.send("from a terminal on h2")
    a.expect("MSG from a terminal on h2")
    b.send("#GOODBYE#")
    b.expect(f"ENDED {a.id}")
    a.expect(f"ENDED {b.id}")
