"""Several hosts sharing one table through a real Redis (``--redis``, docs/CLUSTER.md).

Each "host" is a whole server (supervisor, acceptor, workers, matchmaker) on its
own port, as on its own machine; they share one ``redis-server`` on loopback
that the test starts, and stops, itself. Round-robin placement puts each
host's consecutive clients on different workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from tests.integration.harness import TIMEOUT, Client, LegacyClient, Server, pair
from tests.integration.test_faults import wait_for as migrate_wait_for
from tests.integration.test_invariants import drain_until
from tests.integration.test_match import match_all
from tests.integration.test_migrate import holds
from tests.integration.test_races import crossed_round, nodelay
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

TTL = 1.0  # --node-ttl for most tests: a dead host is gone within a second

Host = Callable[..., Server]


@pytest.fixture
def host(redis_server: RedisServer, start_server: Callable[..., Server]) -> Host:
    """``host(name)``: a server that shares the table in ``redis_server``."""

    def start(name: str, *args: str, ttl: float = TTL, workers: int = 2) -> Server:
        flags = ("--redis", redis_server.url, "--node", name, "--node-ttl", str(ttl))
        return start_server(*flags, *args, workers=workers)

    return start


def get(c: Client, free: bool = False) -> str:
    c.send("GET FREE" if free else "GET")
    return c.line()


def wait_for(what: Callable[[], bool], timeout: float = TIMEOUT, message: str = "") -> float:
    """Seconds until ``what()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not what():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {message}")
        time.sleep(0.02)  # polling a condition that has no event of its own
    return time.monotonic() - start


def node_keys(redis_server: RedisServer, node: str) -> list[str]:
    """Every key or table entry that names ``node``."""
    r = redis_server.client()
    found = list(r.keys(f"mm:*:{node}"))
    if r.hexists("mm:nodes", node):
        found.append(f"mm:nodes[{node}]")
    found += [f"mm:owner[{c}]" for c, n in r.hgetall("mm:owner").items() if n == node]
    if r.zscore("mm:alive", node) is not None:
        found.append(f"mm:alive[{node}]")
    return found


# ---- one table --------------------------------------------------------------------


def test_ids_are_unique_across_hosts_and_the_smallest_free_one_is_given(host: Host) -> None:
    a, b = host("a"), host("b")
    a1 = a.client()
    b1 = b.client()
    a2 = a.client()
    b2 = b.client()
    assert [a1.id, b1.id, a2.id, b2.id] == [1, 2, 3, 4]
    b1.send("#CLOSE#")
    b1.expect("BYE")
    assert a.client().id == 2  # freed on host b, given out on host a
    assert b.client().id == 5


def test_get_lists_every_host_in_ascending_id_order(host: Host) -> None:
    a, b = host("a"), host("b")
    a1, b1, a2, b2 = a.client(), b.client(), a.client(), b.client()
    pair(a1, b2)
    for c in (a2, b1):
        assert get(c) == "CLIENTS 1=BUSY 2=FREE 3=FREE 4=BUSY"
        assert get(c, free=True) == "CLIENTS 2=FREE 3=FREE"


def test_connect_across_hosts_gives_the_same_replies_as_on_one(host: Host) -> None:
    a, b = host("a"), host("b")
    a1, b1, a2 = a.client(), b.client(), a.client()
    a1.send("CONNECT 9")
    a1.expect("ERROR OFFLINE 9")
    b1.send(f"CONNECT {b1.id}")
    b1.expect("ERROR SELF")
    pair(b1, a1)
    a2.send(f"CONNECT {b1.id}")
    a2.expect(f"ERROR BUSY {b1.id}")
    a1.send("hello from a")
    b1.expect("MSG hello from a")
    b1.send("#GOODBYE#")
    b1.expect(f"ENDED {a1.id}")
    a1.expect(f"ENDED {b1.id}")
    pair(a2, b1)  # both FREE again, and paired anew
    b1.send("again")
    a2.expect("MSG again")


def test_match_across_hosts_pairs_with_the_client_waiting_on_another(host: Host) -> None:
    a, b = host("a"), host("b")
    a1, b1, a2, b2 = a.client(), b.client(), a.client(), b.client()
    a1.send("MATCH")
    a1.expect("WAITING")
    a1.send("MATCH NEW")
    a1.expect("ERROR WAITING")
    assert get(b2) == "CLIENTS 1=WAITING 2=FREE 3=FREE 4=FREE"
    assert get(b2, free=True) == "CLIENTS 2=FREE 3=FREE 4=FREE"
    b1.send("MATCH")
    b1.expect(f"CONNECTED {a1.id}")
    a1.expect(f"CONNECTED {b1.id}")
    a1.send("hello across")
    b1.expect("MSG hello across")
    b1.send("hi back")
    a1.expect("MSG hi back")
    a2.send("MATCH")
    a2.expect("WAITING")
    b2.send(f"CONNECT {a2.id}")  # a waiting client is FREE: it leaves the line
    b2.expect(f"CONNECTED {a2.id}")
    a2.expect(f"CONNECTED {b2.id}")
    assert get(b.client()) == "CLIENTS 1=BUSY 2=BUSY 3=BUSY 4=BUSY 5=FREE"
    a1.send("#GOODBYE#")
    a1.expect(f"ENDED {b1.id}")
    b1.expect(f"ENDED {a1.id}")
    a1.send("MATCH NEW")
    a1.expect("WAITING")
    b1.send("MATCH")  # its last partner asked for someone new: they wait side by side
    b1.expect("WAITING")
    b1.send("CANCEL")
    b1.expect("CANCELLED")
    b1.send("CANCEL")
    b1.expect("ERROR NOT_WAITING")
    assert get(b1) == "CLIENTS 1=WAITING 2=FREE 3=BUSY 4=BUSY 5=FREE"


def test_clients_of_two_hosts_matching_at_once_pair_exactly_once(host: Host) -> None:
    """61 clients, alternately on two hosts, send MATCH at once: 30 pairs, each
    CONNECTED to the other (within a host or across), and one left waiting."""
    a, b = host("a"), host("b")
    clients = [(a, b)[i % 2].client() for i in range(61)]
    by_id = {c.id: c for c in clients}
    _, left = match_all(clients)
    listed = get(by_id[left]).split()[1:]
    assert listed == [f"{cid}={'WAITING' if cid == left else 'BUSY'}" for cid in sorted(by_id)]


def test_names_are_unique_across_hosts_and_connect_by_name_reaches_any(host: Host) -> None:
    a, b = host("a"), host("b")
    a1, b1, b2 = a.client(), b.client(), b.client()
    a1.send("NAME Ann")
    a1.expect("NAMED Ann")
    b1.send("NAME aNN")
    b1.expect("ERROR NAME_TAKEN aNN")
    b1.send("NAME 12")  # a bad name is still the worker's to refuse
    b1.expect("ERROR USAGE NAME [<name>]")
    b1.send("NAME bo")
    b1.expect("NAMED bo")
    assert get(b2) == "CLIENTS 1=FREE=Ann 2=FREE=bo 3=FREE"
    b2.send("CONNECT nobody")
    b2.expect("ERROR OFFLINE nobody")
    b1.send("CONNECT bo")
    b1.expect("ERROR SELF")
    b2.send("CONNECT ann")
    b2.expect(f"CONNECTED {a1.id}")
    a1.expect(f"CONNECTED {b2.id}")
    b2.send("hi ann")
    a1.expect("MSG hi ann")
    b1.send("CONNECT ANN")
    b1.expect(f"ERROR BUSY {a1.id}")
    assert get(b1) == "CLIENTS 1=BUSY=Ann 2=FREE=bo 3=BUSY"
    a1.send("#CLOSE#")
    a1.expect("BYE")
    b2.expect(f"ENDED {a1.id}")
    b1.send("NAME ann")  # freed with its holder
    b1.expect("NAMED ann")
    b1.send("NAME")
    b1.expect("NAMED")
    assert get(b2) == "CLIENTS 2=FREE 3=FREE"


def test_a_killed_host_frees_its_names_and_leaves_the_line(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a"), host("b")
    a1, b1, a2 = a.client(), b.client(), a.client()
    b1.send("NAME bo")
    b1.expect("NAMED bo")
    b1.send("MATCH")
    b1.expect("WAITING")
    assert get(a1) == "CLIENTS 1=FREE 2=WAITING=bo 3=FREE"
    b.kill()
    wait_for(lambda: get(a1) == "CLIENTS 1=FREE 3=FREE", message="b reaped")
    a1.send("MATCH")  # b1 left the line with its host
    a1.expect("WAITING")
    a2.send("NAME BO")
    a2.expect("NAMED BO")
    r = redis_server.client()
    assert r.zrange("mm:line", 0, -1) == ["1"]
    assert r.hgetall("mm:names") == {"bo": "3"}


def leave(c: Client) -> None:
    """``#CLOSE#``, and wait for its ``BYE`` (an ``ENDED`` may come first)."""
    c.send("#CLOSE#")
    while c.line() != "BYE":
        pass


def test_crossed_connects_across_hosts_pair_once(host: Host) -> None:
    """As on one host (test_races.py): whichever CONNECT is second gets ``ERROR TALKING``,
    after its ``CONNECTED``, and is never relayed as chat."""
    a, b = host("a"), host("b")
    x, y = nodelay(a.client()), nodelay(b.client())
    for r in range(100):
        late = r % 2 == 1
        extra = crossed_round(x, y, late)
        if late:
            assert extra == [f"ERROR TALKING {x.id}"], (r, extra)
        else:
            assert extra in ([f"ERROR TALKING {y.id}"], [f"ERROR TALKING {x.id}"]), (r, extra)


def test_many_hosts_racing_for_one_free_client_get_one_connected(host: Host) -> None:
    hosts = [host("a"), host("b"), host("c")]
    for round_ in range(5):
        target = hosts[round_ % 3].client()
        askers = [h.client() for h in hosts for _ in range(4)]
        barrier = threading.Barrier(len(askers))

        def ask(c: Client, target: int = target.id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            c.send(f"CONNECT {target}")

        threads = [threading.Thread(target=ask, args=(c,)) for c in askers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        replies = [c.line() for c in askers]
        winners = [c for c, r in zip(askers, replies, strict=True) if r == f"CONNECTED {target.id}"]
        assert len(winners) == 1, replies
        assert sorted(r for r in replies if r.startswith("ERROR")) == [
            f"ERROR BUSY {target.id}"
        ] * (len(askers) - 1)
        target.expect(f"CONNECTED {winners[0].id}")
        listed = get(askers[0] if askers[0] is not winners[0] else askers[1])
        busy = [w.split("=")[0] for w in listed.split()[1:] if w.endswith("BUSY")]
        assert busy == sorted([str(target.id), str(winners[0].id)], key=int), listed
        for c in [target, *askers]:
            leave(c)


def test_ten_thousand_lines_each_way_arrive_in_order_exactly_once(host: Host) -> None:
    a, b = host("a"), host("b")
    x, y = a.client(), b.client()
    pair(x, y)
    n = 10_000

    def pour(c: Client, tag: str) -> None:
        c.sock.sendall("".join(f"{tag} {i}\n" for i in range(n)).encode())

    senders = [
        threading.Thread(target=pour, args=(x, "x")),
        threading.Thread(target=pour, args=(y, "y")),
    ]
    for t in senders:
        t.start()
    got_y = [y.line() for _ in range(n)]
    got_x = [x.line() for _ in range(n)]
    for t in senders:
        t.join()
    assert got_y == [f"MSG x {i}" for i in range(n)]
    assert got_x == [f"MSG y {i}" for i in range(n)]
    x.send("end")  # the next line after the last: nothing came twice
    y.expect("MSG end")
    y.send("end")
    x.expect("MSG end")


def test_goodbye_close_and_a_vanished_client_end_the_session_on_the_other_host(host: Host) -> None:
    a, b = host("a"), host("b")
    x, y = a.client(), b.client()
    pair(x, y)
    x.send("#GOODBYE#")
    x.expect(f"ENDED {y.id}")
    y.expect(f"ENDED {x.id}")
    pair(y, x)
    y.send("#CLOSE#")
    y.expect("BYE")
    x.expect(f"ENDED {y.id}")
    z = b.client()
    pair(x, z)
    z.sock.close()  # no goodbye, no #CLOSE#: the socket is just gone
    x.expect(f"ENDED {z.id}")
    assert get(x) == f"CLIENTS {x.id}=FREE"


def test_a_line_in_flight_during_a_goodbye_never_reaches_a_later_session(host: Host) -> None:
    a, b = host("a"), host("b")
    x, y, w = a.client(), b.client(), a.client()
    for i in range(30):
        pair(x, y)
        x.send(f"late {i}")
        y.send("#GOODBYE#")  # crosses x's line
        lines = [y.line()]
        if lines[0].startswith("MSG"):
            lines.append(y.line())
        assert lines[-1] == f"ENDED {x.id}", lines
        x.expect(f"ENDED {y.id}")
        x.send("PING")  # FREE now: a line x's worker read after the ENDED is a command
        assert drain_until(x, "PONG") in ([], ["ERROR UNKNOWN_COMMAND late"])
        pair(w, y)  # y's next session: x's late line must not show up here
        w.send("fresh")
        y.expect("MSG fresh")
        w.send("#GOODBYE#")
        w.expect(f"ENDED {y.id}")
        y.expect(f"ENDED {w.id}")


def test_local_sessions_stay_on_their_host_and_across_workers(
    host: Host, redis_server: RedisServer
) -> None:
    a, _ = host("a"), host("b")
    x, y = a.client(), a.client()
    assert a.worker_of(x) != a.worker_of(y)
    pair(x, y)
    x.send("local")
    y.expect("MSG local")
    assert redis_server.client().xlen("mm:inbox:a") == 0  # no line went through Redis


def test_a_legacy_client_chats_with_a_client_of_another_host(host: Host) -> None:
    a, b = host("a", "--legacy-port", "0"), host("b")
    old = LegacyClient(a.host, a.legacy_port)
    a.opened.append(old)  # type: ignore[arg-type]
    old.send("PING")
    old.expect("SEND PONG")  # answered once it has its id, 1
    y = b.client()
    y.send("CONNECT 1")
    y.expect("CONNECTED 1")
    old.expect(f"CONNECT SUCCESS% {y.id}")
    old.send("hi from the old client")
    y.expect("MSG hi from the old client")
    y.send("hello back")
    old.expect("SEND hello back")
    y.send("#GOODBYE#")
    y.expect("ENDED 1")
    old.expect("TERMINATED")


# ---- faults ---------------------------------------------------------------------


def test_a_killed_host_is_gone_within_its_ttl_and_leaves_nothing_in_redis(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a"), host("b")
    x, y, _, w = a.client(), b.client(), b.client(), a.client()
    pair(x, y)
    assert get(w) == "CLIENTS 1=BUSY 2=BUSY 3=FREE 4=FREE"
    b.kill()  # SIGKILL to its whole process group
    killed = time.monotonic()
    x.expect(f"ENDED {y.id}", timeout=TIMEOUT)
    assert time.monotonic() - killed <= TTL + 1.0  # the TTL, and a beat of slack for the machine
    assert get(w) == "CLIENTS 1=FREE 4=FREE"
    assert node_keys(redis_server, "b") == []
    assert a.client().id == 2  # the dead host's ids are free


def test_a_host_stopped_on_purpose_leaves_at_once(host: Host, redis_server: RedisServer) -> None:
    a, b = host("a", ttl=8.0), host("b", ttl=8.0)
    x, y, w = a.client(), b.client(), a.client()
    pair(x, y)
    stopped = time.monotonic()
    assert b.stop() == 0  # SIGTERM: its clients get OUTAGE, and it leaves the table
    x.expect(f"ENDED {y.id}")
    assert time.monotonic() - stopped < 8.0 * 0.75  # not reaped: it left
    assert get(w) == f"CLIENTS {x.id}=FREE {w.id}=FREE"
    assert node_keys(redis_server, "b") == []


def test_a_restarted_host_drops_what_its_last_run_left(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a", ttl=8.0), host("b", ttl=8.0)
    x, y = a.client(), b.client()
    pair(x, y)
    b.kill()
    killed = time.monotonic()
    b2 = host("b", ttl=8.0)  # same name: its first heartbeat reaps the last run
    x.expect(f"ENDED {y.id}")
    assert time.monotonic() - killed < 8.0 * 0.75  # before the old heartbeat expires
    assert get(x) == f"CLIENTS {x.id}=FREE"
    assert b2.client().id == 2


def test_a_dead_worker_or_matchmaker_stays_inside_its_host(host: Host) -> None:
    # a longer --node-ttl than TTL: a matchmaker started anew on a busy machine may take
    # longer than three quarters of a second to beat again, and then its host is dead
    a, b = host("a", ttl=3.0), host("b", ttl=3.0)
    x1, y1 = a.client(), b.client()  # y1 on b's worker 1
    x2, y2 = a.client(), b.client()  # y2 on b's worker 2
    pair(x1, y1)
    pair(x2, y2)
    psutil.Process(b.pid_of(f"worker {b.worker_of(y1)}")).kill()
    x1.expect(f"ENDED {y1.id}")  # that session really ended
    y2.send("still here")
    x2.expect("MSG still here")
    psutil.Process(b.pid_of("matchmaker")).kill()
    for i in range(50):
        x2.send(f"through {i}")
    for i in range(50):
        y2.expect(f"MSG through {i}")
    y2.send("back")
    x2.expect("MSG back")
    assert get(x1) == f"CLIENTS {x1.id}=FREE {x2.id}=BUSY {y2.id}=BUSY"


def test_a_matchmaker_started_anew_tells_redis_nothing_before_every_hello(
    host: Host, redis_server: RedisServer
) -> None:
    """Regression: the new matchmaker's first heartbeat asked for a SYNC, which ran with
    the table still empty (a worker's hello not yet in), and Redis dropped that worker's
    clients: their sessions across hosts ended."""
    a, b = host("a", ttl=3.0), host("b", ttl=3.0)
    x, y = a.client(), b.client()
    pair(x, y)
    r = redis_server.client()
    worker = b.pid_of(f"worker {b.worker_of(y)}")
    os.kill(worker, signal.SIGSTOP)  # its hello to the new matchmaker waits
    try:
        old = b.pid_of("matchmaker")
        psutil.Process(old).kill()
        beat = r.zscore("mm:alive", "b")
        wait_for(lambda: r.zscore("mm:alive", "b") != beat, message="b beat again")
    finally:
        os.kill(worker, signal.SIGCONT)
    y.send("still paired")
    x.expect("MSG still paired")
    x.send("and back")
    y.expect("MSG and back")
    z = a.client()  # in Redis too, both are still BUSY
    assert get(z) == f"CLIENTS {x.id}=BUSY {y.id}=BUSY {z.id}=FREE"


def test_a_client_moving_to_a_worker_that_dies_is_taken_back_in_redis_too(host: Host) -> None:
    """Its old worker hands it over, its new one dies before taking it in: the dead
    worker's clients are dropped, in Redis too, and the replacement takes it in. Redis
    must hold its id again before its requests are decided (else: ERROR UNAVAILABLE)."""
    a, b = host("a"), host("b")
    x, y = a.client(), a.client()
    far = b.client()
    src, dst = a.worker_of(x), a.worker_of(y)
    old = a.pid_of(f"worker {dst}")
    os.kill(old, signal.SIGSTOP)
    x.send(f"CONNECT {y.id}")
    migrate_wait_for(lambda: not holds(a, src, x), what="x handed over")
    os.kill(old, signal.SIGKILL)  # y dies with it; x waits in the inbox the supervisor keeps
    y.expect_closed()
    x.expect(f"ERROR OFFLINE {y.id}")
    assert a.worker_of(x) == dst  # the new worker
    x.send("GET")
    x.expect(f"CLIENTS {x.id}=FREE {far.id}=FREE")
    pair(far, x)  # and across hosts, with the id Redis holds for it again
    x.send("back in")
    far.expect("MSG back in")


def test_redis_unreachable_leaves_local_sessions_and_holds_lines_across(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a", ttl=6.0), host("b", ttl=6.0)  # the pause below stays well under it
    x, y = a.client(), b.client()
    u, v = a.client(), a.client()
    pair(x, y)
    pair(u, v)
    redis_server.pause()
    try:
        u.send("local")
        v.expect("MSG local")
        for i in range(20):
            x.send(f"held {i}")
        newcomer = a.connect()  # an id needs the shared table
        newcomer.expect("ERROR UNAVAILABLE")
        newcomer.expect_closed()
        u.send("#GOODBYE#")
        u.expect(f"ENDED {v.id}")
        v.expect(f"ENDED {u.id}")
        u.send("GET")
        u.expect("ERROR UNAVAILABLE", timeout=TIMEOUT)
        u.send(f"CONNECT {v.id}")
        u.expect("ERROR UNAVAILABLE")
    finally:
        redis_server.resume()
    for i in range(20):
        y.expect(f"MSG held {i}")
    y.send("after")
    x.expect("MSG after")
    wait_for(lambda: get(u) == "CLIENTS 1=BUSY 2=BUSY 3=FREE 4=FREE", message="GET again")


def test_a_long_redis_outage_ends_sessions_across_hosts(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a"), host("b")
    x, y = a.client(), b.client()
    pair(x, y)
    redis_server.pause()
    try:
        x.expect(f"ENDED {y.id}", timeout=TTL + 3)
        y.expect(f"ENDED {x.id}", timeout=TTL + 3)
    finally:
        redis_server.resume()
    wait_for(lambda: get(x) == "CLIENTS 1=FREE 2=FREE", message="both back in the table")
    pair(x, y)


def test_redis_restarted_empty_gets_every_client_and_session_back(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a"), host("b")
    x, y, z = a.client(), b.client(), a.client()
    pair(x, y)
    z.send("NAME zed")
    z.expect("NAMED zed")
    z.send("MATCH")
    z.expect("WAITING")
    redis_server.kill()
    for i in range(20):
        x.send(f"while Redis is dead {i}")
    y.send("and back")
    redis_server.start()  # same port, no data
    for i in range(20):
        y.expect(f"MSG while Redis is dead {i}")
    x.expect("MSG and back")
    wait_for(lambda: get(z) == "CLIENTS 1=BUSY 2=BUSY 3=WAITING=zed", message="table rebuilt")
    x.send("after the restart")
    y.expect("MSG after the restart")
    fresh = b.client()
    assert fresh.id == 4  # not an id anyone holds
    fresh.send("NAME ZED")  # names and the line came back with their hosts
    fresh.expect("ERROR NAME_TAKEN ZED")
    fresh.send("MATCH")
    fresh.expect(f"CONNECTED {z.id}")
    z.expect(f"CONNECTED {fresh.id}")
    y.send("#GOODBYE#")
    y.expect(f"ENDED {x.id}")
    x.expect(f"ENDED {y.id}")


def test_redis_restarted_empty_still_knows_whom_match_new_skips(
    host: Host, redis_server: RedisServer
) -> None:
    a, b = host("a"), host("b")
    x, y = a.client(), b.client()
    pair(x, y)
    y.send("#GOODBYE#")
    y.expect(f"ENDED {x.id}")
    x.expect(f"ENDED {y.id}")
    redis_server.kill()
    redis_server.start()  # same port, no data
    wait_for(lambda: get(x) == "CLIENTS 1=FREE 2=FREE", message="table rebuilt")
    x.send("MATCH NEW")
    x.expect("WAITING")
    y.send("MATCH")  # its last partner asked for someone new
    y.expect("WAITING")
    z = b.client()
    z.send("MATCH")
    z.expect(f"CONNECTED {x.id}")
    x.expect(f"CONNECTED {z.id}")


def test_bad_data_in_redis_is_logged_and_answered_not_a_crash(
    host: Host, redis_server: RedisServer
) -> None:
    a = host("a")
    x = a.client()
    mm = a.pid_of("matchmaker")
    r = redis_server.client()
    r.xadd("mm:inbox:a", {"m": "Z|not|ours"})
    r.xadd("mm:inbox:a", {"other": "field"})
    r.delete("mm:session")
    r.set("mm:session", "a string where a hash belongs")
    x.send("GET")
    x.expect("ERROR UNAVAILABLE")
    r.delete("mm:session")
    assert get(x) == f"CLIENTS {x.id}=FREE"
    assert a.pid_of("matchmaker") == mm
    wait_for(lambda: "not ours" in a.log(), message="the foreign entry is logged")
    assert "WRONGTYPE" in a.log()
