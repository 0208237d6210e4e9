"""``--metrics-port`` after a scripted run: every counter says what the run did.

And the supervisor's word to systemd (``NOTIFY_SOCKET``): ``READY=1`` once every
child serves, ``STOPPING=1`` at the shutdown.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import TIMEOUT, pair
from tests.integration.test_tls import ca, pki, tls_flags, trusting, wait_for  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_every_counter_matches_a_scripted_run(start_server, pki, trusting):  # noqa: F811
    server = start_server(*tls_flags(pki, "--metrics-port", "0", "--max-clients", "7"))
    port = server.metrics_port
    a, b, c, d = (server.client() for _ in range(4))
    t = server.tls_client(trusting)
    e, f = server.client(), server.client()
    where = {x: server.worker_of(x) for x in (a, b, c, d, t, e, f)}
    assert [where[x] for x in (a, b, c, d, t, e, f)] == [1, 2, 1, 2, 1, 2, 1]

    pair(a, c)  # same worker: 3 lines
    for i in range(3):
        a.send(f"same {i}")
        c.expect(f"MSG same {i}")
    pair(b, t)  # b's worker and t's differ, and a TLS client cannot move: relayed
    for x, y, text in ((b, t, "r1"), (b, t, "r2"), (t, b, "r3")):
        x.send(text)
        y.expect(f"MSG {text}")
    pair(d, f)  # across workers: one moves (1 move), then 4 lines
    for x, y, text in ((d, f, "m1"), (f, d, "m2"), (d, f, "m3"), (f, d, "m4")):
        x.send(text)
        y.expect(f"MSG {text}")
    e.send("CONNECT 99")
    e.expect("ERROR OFFLINE 99")
    e.send("nonsense")
    e.expect("ERROR UNKNOWN_COMMAND nonsense")
    e.send(f"CONNECT {e.id}")
    e.expect("ERROR SELF")
    extra = server.connect()  # the 8th: --max-clients 7
    extra.expect("ERROR FULL")
    extra.expect_closed()
    a.send("#GOODBYE#")
    a.expect(f"ENDED {c.id}")
    c.expect(f"ENDED {a.id}")
    os.kill(server.pid_of("acceptor"), 9)

    expected = {
        ("matchmaker_clients_connected", ()): 7,
        ("matchmaker_sessions_active", ()): 2,
        ("matchmaker_sessions_started_total", ()): 3,
        ("matchmaker_lines_relayed_total", (("path", "same_worker"),)): 3,
        ("matchmaker_lines_relayed_total", (("path", "relayed"),)): 3,
        ("matchmaker_lines_relayed_total", (("path", "moved"),)): 4,
        ("matchmaker_lines_relayed_total", (("path", "cross_host"),)): 0,
        ("matchmaker_moves_total", ()): 1,
        ("matchmaker_errors_total", (("code", "OFFLINE"),)): 1,
        ("matchmaker_errors_total", (("code", "UNKNOWN_COMMAND"),)): 1,
        ("matchmaker_errors_total", (("code", "SELF"),)): 1,
        ("matchmaker_errors_total", (("code", "FULL"),)): 1,
        ("matchmaker_errors_total", (("code", "BUSY"),)): 0,
        ("matchmaker_drops_total", (("reason", "full"),)): 1,
        ("matchmaker_drops_total", (("reason", "idle"),)): 0,
        ("matchmaker_restarts_total", (("role", "acceptor"),)): 1,
        ("matchmaker_restarts_total", (("role", "worker"),)): 0,
    }

    def settled() -> bool:
        got = scrape(port)
        return all(got.get(key) == value for key, value in expected.items())

    wait_for(settled, "the counters did not settle")  # the reports come every 0.25 s
    got = scrape(port)
    assert {key: got[key] for key in expected} == expected
    errors = {k[1][0][1]: v for k, v in got.items() if k[0] == "matchmaker_errors_total" and v}
    assert errors == {"OFFLINE": 1, "UNKNOWN_COMMAND": 1, "SELF": 1, "FULL": 1}
    drops = {k[1][0][1]: v for k, v in got.items() if k[0] == "matchmaker_drops_total" and v}
    assert drops == {"full": 1}
    for title in ("supervisor", "acceptor", "matchmaker", "worker 1", "worker 2"):
        role = title.split()[0]
        assert sample(got, "matchmaker_process_resident_memory_bytes", process=title, role=role)
        assert sample(got, "matchmaker_process_cpu_seconds_total", process=title, role=role) >= 0
    started = time.perf_counter()
    scrape(port)
    assert time.perf_counter() - started < 0.05


def notify_socket(tmp_path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(TIMEOUT)
    return sock, path


def test_systemd_hears_ready_once_every_child_serves_and_stopping_at_sigterm(
    start_server, tmp_path, monkeypatch
):
    sock, path = notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with sock:
        server = start_server()  # returns once the listening line is out
        assert sock.recv(64) == b"READY=1"
        a = server.client()
        a.quiet()
        server.stop()
        assert sock.recv(64) == b"STOPPING=1"
        a.expect("OUTAGE")


def test_a_notify_socket_in_the_abstract_namespace(start_server, tmp_path, monkeypatch):
    name = f"matchmaker-test-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(TIMEOUT)
        start_server()
        assert sock.recv(64) == b"READY=1"
