"""The Lua scripts of the shared table (``matchmaker.shared``) against a real Redis.

A model of the table (ids, owners, sessions, the line, names) runs beside Redis; random
operations from three hosts must give the same answers in both, and after
each one the invariants hold: ids unique and the smallest free one given,
sessions symmetric, nobody in two, and the news of a decision on the stream
of the host it concerns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from matchmaker import shared
from tests.redis_server import RedisServer

HOSTS = ("a", "b", "c")
TOKEN = {h: f"t-{h}" for h in HOSTS}
ALIVE_MS = 60_000


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


class Scripts:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.scripts = {n: r.register_script(shared.source(n)) for n in shared.SCRIPTS}
        self.ops = 0

    def __call__(self, name: str, *args: Any) -> Any:
        """The script's reply, without the stream mark a decision ends with."""
        reply = self.scripts[name](args=self.args(name, args))
        if name in ("connect", "goodbye", "match", "cancel", "name") and reply[0] != "LOST":
            return reply[:-1]
        if name == "drop":
            return len(reply[:-1]) if reply else 0  # how many freed
        return reply

    def mark(self, name: str, *args: Any) -> str:
        return str(self.scripts[name](args=self.args(name, args))[-1])

    def args(self, name: str, args: tuple[Any, ...]) -> list[Any]:
        """A decision's arguments end with a fresh op id (``shared.ONCE``)."""
        if name == "connect" and len(args) == 5:
            args = (*args, "")  # by id, not by name
        if name not in shared.ONCE:
            return list(args)
        self.ops += 1
        return [*args, f"test.{self.ops}"]

    def join(self, host: str, clients: tuple[tuple[Any, ...], ...] = (), epoch: str = "") -> Any:
        """SYNC ``clients`` (cid, since, session, peer, heard[, name, waiting, new,
        last_peer, last_sid]);
        ``epoch``: the one the host last synced in (by default, the current one: Redis
        kept its data)."""
        defaults = ("", 0, 0, 0, 0)
        flat = [x for c in clients for x in (*c, *defaults[len(c) - 5 :])]
        epoch = epoch or self.r.get("mm:epoch") or ""
        args = (host, TOKEN[host], ALIVE_MS, 60_000, "e-sync", epoch, len(clients), *flat)
        return shared.synced(self("sync", *args))

    def events(self, host: str) -> list[str]:
        got = [fields["m"] for _, fields in self.r.xrange(f"mm:inbox:{host}")]
        self.r.delete(f"mm:inbox:{host}")
        self.r.xgroup_create(f"mm:inbox:{host}", shared.GROUP, "0", mkstream=True)
        return got


@pytest.fixture
def scripts(server: RedisServer) -> Scripts:
    r = server.client()
    r.flushall()
    s = Scripts(r)
    s("beat", "a", TOKEN["a"], ALIVE_MS, 1, "e1")  # a new epoch
    r.delete("mm:rebuild")  # and no rebuild window
    for h in HOSTS:
        s.join(h)
    return s


def test_the_smallest_free_id_across_hosts(scripts: Scripts) -> None:
    got = [int(scripts("register", h, TOKEN[h], 0)[1]) for h in ("a", "b", "a", "c")]
    assert got == [1, 2, 3, 4]
    assert scripts("drop", "b", TOKEN["b"], 2) == 1
    assert scripts("drop", "a", TOKEN["a"], 2) == 0  # not a's to drop
    assert int(scripts("register", "c", TOKEN["c"], 0)[1]) == 2


def test_connect_answers_and_tells_the_other_host(scripts: Scripts) -> None:
    for h in ("a", "b", "b"):
        scripts("register", h, TOKEN[h], 100)
    a = TOKEN["a"]
    assert scripts("connect", "a", a, 1, 1, 200) == ["SELF"]
    assert scripts("connect", "a", a, 1, 9, 200) == ["OFFLINE", "9"]
    assert scripts("connect", "a", a, 1, 2, 50) == ["OFFLINE", "2"]  # asked before 2 was given
    assert scripts("connect", "a", a, 1, 2, 200) == ["OK", "1", "b", "2"]
    assert scripts.events("b") == ["P|2|1|1|a"]
    assert scripts("connect", "b", TOKEN["b"], 3, 2, 200) == ["BUSY", "2"]
    assert scripts("connect", "b", TOKEN["b"], 2, 3, 200) == ["TALKING", "1", "1", "a"]
    assert scripts("connect", "c", TOKEN["c"], 2, 3, 200) == ["LOST"]  # 2 is not c's
    assert scripts("goodbye", "b", TOKEN["b"], 2, 7) == ["STALE"]
    assert scripts("goodbye", "b", TOKEN["b"], 2, 1) == ["OK", "1"]
    assert scripts.events("a") == ["E|1|1|2"]


def test_a_decision_made_again_with_the_same_op_gets_the_first_answer(scripts: Scripts) -> None:
    """A call whose answer was lost is made again: it must not decide twice."""
    register = scripts.scripts["register"]
    first = register(args=["a", TOKEN["a"], 0, "x.1"])
    assert register(args=["a", TOKEN["a"], 0, "x.1"]) == first == ["OK", "1"]
    assert register(args=["a", TOKEN["a"], 0, "x.2"]) == ["OK", "2"]
    connect = scripts.scripts["connect"]
    ok = connect(args=["a", TOKEN["a"], 1, 2, 10, "", "x.3"])
    assert ok[:2] == ["OK", "1"]
    assert connect(args=["a", TOKEN["a"], 1, 2, 10, "", "x.3"]) == ok  # not TALKING
    assert scripts.r.hlen("mm:owner") == 2


def test_a_decision_returns_the_last_entry_on_the_callers_stream(scripts: Scripts) -> None:
    """News up to the mark came before the decision, and is applied before its outcome."""
    for h in ("a", "b", "b"):
        scripts("register", h, TOKEN[h], 0)
    assert scripts.mark("connect", "a", TOKEN["a"], 1, 9, 10) == "0-0"  # nothing for a yet
    scripts("connect", "b", TOKEN["b"], 2, 1, 10)  # P on a's stream
    (news,) = scripts.r.xrange("mm:inbox:a")
    assert scripts.mark("connect", "a", TOKEN["a"], 1, 3, 10) == news[0]  # TALKING, after it
    assert scripts.mark("drop", "b", TOKEN["b"], 3) == "0-0"  # b's own stream is empty


def test_a_host_that_stops_beating_is_reaped_with_everything_it_had(scripts: Scripts) -> None:
    scripts("register", "a", TOKEN["a"], 0)
    scripts("register", "b", TOKEN["b"], 0)
    scripts("connect", "a", TOKEN["a"], 1, 2, 10)
    scripts.r.zadd("mm:alive", {"b": 0})  # its heartbeat lapsed
    state, _, reaped = scripts("beat", "a", TOKEN["a"], ALIVE_MS, 1, "unused")
    assert (state, reaped) == ("OK", 1)
    assert scripts.events("a") == ["E|1|1|2"]
    assert [k for k in scripts.r.keys("*") if k.endswith(":b")] == []
    assert not scripts.r.hexists("mm:nodes", "b")
    assert scripts.r.zscore("mm:alive", "b") is None
    assert scripts.r.hgetall("mm:owner") == {"1": "a"}
    assert scripts("register", "b", TOKEN["b"], 0) == ["LOST"]  # must join again


def test_a_redis_that_stood_still_reaps_nobody_for_it(scripts: Scripts) -> None:
    """Stopped or swapped out, Redis lets every deadline pass at once: the first host to
    beat afterwards must not take the others for dead."""
    scripts("register", "b", TOKEN["b"], 0)
    now = scripts.r.time()
    now_ms = now[0] * 1000 + now[1] // 1000
    scripts.r.zadd("mm:alive", {"b": now_ms - 5_000, "c": now_ms - 5_000})  # lapsed...
    scripts.r.set("mm:clock", now_ms - 60_000)  # ...while nobody could beat
    _, _, reaped = scripts("beat", "a", TOKEN["a"], ALIVE_MS, 1, "unused")
    assert reaped == 0
    assert scripts.r.hgetall("mm:owner") == {"1": "b"}
    assert scripts.r.zscore("mm:alive", "b") > now_ms  # given back the time it lost


def test_sync_after_redis_lost_everything(scripts: Scripts) -> None:
    scripts.r.flushall()  # a restart with no persistence
    state, epoch, _ = scripts("beat", "a", TOKEN["a"], ALIVE_MS, 60_000, "e2")
    assert state == "JOIN" and epoch == "e2"
    # a holds 1 (in session 4 with 2 on b) and 3 (in session 5 with 5, gone for good)
    got = scripts.join("a", ((1, 10, 4, 2, 4), (3, 10, 5, 5, 5)), epoch="e1")
    assert (got.refused, got.ended, got.paired) == ([], [], [])
    assert scripts("register", "a", TOKEN["a"], 0) == ["WAIT"]  # still rebuilding
    got = scripts.join("b", ((2, 10, 4, 1, 4), (3, 10, 0, 0, 0)), epoch="e1")
    assert got.refused == [3]  # a took 3 back first
    assert scripts.r.smembers("mm:tentative") == {"3"}
    scripts.r.delete("mm:rebuild")
    scripts("beat", "a", TOKEN["a"], ALIVE_MS, 60_000, "unused")
    assert scripts.events("a") == ["E|3|5|5"]  # its partner never came back
    assert scripts.r.hgetall("mm:session") == {"1": "4", "2": "4"}
    assert int(scripts("register", "a", TOKEN["a"], 0)[1]) == 4
    assert int(scripts.r.get("mm:sid")) == 5  # new sessions are numbered above every old one


def test_sync_after_redis_lost_everything_brings_back_whom_match_new_skips(
    scripts: Scripts,
) -> None:
    """Both ends' hosts must name the same last session: an id that moved on to a
    newcomer (4 says its last partner was 3 in session 2; 3 says 5 in session 6)
    is not skipped."""
    scripts.r.flushall()
    scripts("beat", "a", TOKEN["a"], ALIVE_MS, 60_000, "e2")
    # a: 1 waits with MATCH NEW after session 4 with 2; 3's last partner 5 is gone
    got = scripts.join("a", ((1, 10, 0, 0, 4, "", 5, 1, 2, 4), (3, 30, 0, 0, 6, "", 0, 0, 5, 6)),
                       epoch="e1")  # fmt: skip
    assert got.refused == []
    assert scripts.r.hgetall("mm:last_peer") == {}  # 2's host has not said it yet
    got = scripts.join("b", ((2, 20, 0, 0, 4, "", 0, 0, 1, 4), (4, 40, 0, 0, 2, "", 0, 0, 3, 2)),
                       epoch="e1")  # fmt: skip
    assert scripts.r.hgetall("mm:last_peer") == {"1": "2|20", "2": "1|10"}
    scripts.r.delete("mm:rebuild")
    assert scripts("match", "b", TOKEN["b"], 2, 0, 50) == ["QUEUED"]  # 1 asked for someone new
    # a new session is numbered above every one a host has heard of (3's 6)
    assert scripts("match", "b", TOKEN["b"], 4, 1, 60) == ["OK", "7", "a", "1"]


def test_a_session_ended_after_the_rebuild_keeps_its_last_partner(scripts: Scripts) -> None:
    """A last session one host names after a newer one ended does not overwrite it."""
    scripts.r.flushall()
    scripts("beat", "a", TOKEN["a"], ALIVE_MS, 60_000, "e2")
    scripts.join("a", ((1, 10, 0, 0, 4, "", 0, 0, 2, 4), (3, 30, 0, 0, 0)), epoch="e1")
    scripts.r.delete("mm:rebuild")
    assert scripts("connect", "a", TOKEN["a"], 1, 3, 100)[:2] == ["OK", "5"]
    assert scripts("goodbye", "a", TOKEN["a"], 1, 5) == ["OK", "3"]
    scripts.join("b", ((2, 20, 0, 0, 4, "", 0, 0, 1, 4),), epoch="e1")
    assert scripts.r.hgetall("mm:last_peer") == {"1": "3|30", "3": "1|10", "2": "1|10"}


def test_sync_tells_a_host_what_it_missed(scripts: Scripts) -> None:
    for h in ("a", "b", "a"):
        scripts("register", h, TOKEN[h], 0)
    scripts("connect", "b", TOKEN["b"], 2, 1, 10)  # a never heard: its P is lost
    scripts("connect", "a", TOKEN["a"], 3, 3, 10)
    got = scripts.join("a", ((1, 0, 0, 0, 0), (3, 0, 0, 0, 0)))
    assert got.paired == [(1, 1, 2, "b")]
    scripts("goodbye", "b", TOKEN["b"], 2, 1)
    scripts.events("a")
    scripts("connect", "b", TOKEN["b"], 2, 1, 10)  # session 2
    # a says 1 is FREE and has heard of session 2: it ended it while Redis was away
    got = scripts.join("a", ((1, 0, 0, 0, 2), (3, 0, 0, 0, 0)))
    assert (got.ended, got.paired) == ([], [])
    assert scripts.r.hgetall("mm:session") == {}
    assert scripts.events("b")[-1] == "E|2|2|1"
    # a host that no longer has a client: it is freed, its partner told
    scripts("connect", "b", TOKEN["b"], 2, 3, 10)
    scripts.join("a", ((1, 0, 0, 0, 2),))
    assert scripts.events("b")[-1] == "E|2|3|3"
    assert "3" not in scripts.r.hgetall("mm:owner")


def test_match_pairs_the_longest_waiting_client_else_waits(scripts: Scripts) -> None:
    for h in ("a", "b", "c"):
        scripts("register", h, TOKEN[h], 100)
    assert scripts("match", "a", TOKEN["a"], 1, 0, 500) == ["QUEUED"]
    assert scripts("match", "a", TOKEN["a"], 1, 0, 600) == ["WAITING"]
    assert scripts("match", "b", TOKEN["b"], 2, 0, 400) == ["OK", "1", "a", "1"]
    assert scripts.events("a") == ["P|1|1|2|b"]
    assert scripts.r.zcard("mm:line") == 0  # both ends left it
    assert scripts("match", "a", TOKEN["a"], 1, 0, 1) == ["TALKING", "2", "1", "b"]
    assert scripts("goodbye", "a", TOKEN["a"], 1, 1) == ["OK", "2"]
    assert scripts("match", "a", TOKEN["a"], 1, 1, 800) == ["QUEUED"]  # NEW: not 2
    assert scripts("match", "b", TOKEN["b"], 2, 0, 700) == ["QUEUED"]  # side by side
    assert scripts("match", "c", TOKEN["c"], 3, 0, 900) == ["OK", "2", "b", "2"]  # since 700
    assert scripts.events("b") == ["E|2|1|1", "P|2|2|3|c"]  # the goodbye, then this
    assert scripts("match", "c", TOKEN["c"], 9, 0, 1) == ["LOST"]  # not a client of c


def test_match_new_skips_the_last_partner_both_ways(scripts: Scripts) -> None:
    for h in ("a", "b", "c"):
        scripts("register", h, TOKEN[h], 100)
    scripts("connect", "a", TOKEN["a"], 1, 2, 200)
    scripts("goodbye", "a", TOKEN["a"], 1, 1)
    assert scripts("match", "a", TOKEN["a"], 1, 1, 300) == ["QUEUED"]
    assert scripts("match", "b", TOKEN["b"], 2, 0, 400) == ["QUEUED"]  # 1 asked for someone new
    assert scripts("match", "c", TOKEN["c"], 3, 1, 500) == ["OK", "2", "a", "1"]
    scripts("drop", "a", TOKEN["a"], 1)
    assert int(scripts("register", "a", TOKEN["a"], 600)[1]) == 1  # a newcomer with id 1
    assert scripts("match", "a", TOKEN["a"], 1, 1, 700) == ["OK", "3", "b", "2"]  # not skipped


def test_match_looks_past_a_long_run_of_clients_it_must_skip(scripts: Scripts) -> None:
    for _ in range(41):
        scripts("register", "a", TOKEN["a"], 100)
    r = scripts.r
    for cid in range(2, 42):  # all waiting; all but 41 asked NEW, 1 their last partner
        r.zadd("mm:line", {str(cid): cid})
        if cid < 41:
            r.sadd("mm:new", cid)
            r.hset("mm:last_peer", str(cid), "1|100")
    assert scripts("match", "a", TOKEN["a"], 1, 0, 900) == ["OK", "1", "a", "41"]
    assert r.zcard("mm:line") == 39


def test_connect_takes_a_waiting_client_and_the_asker_out_of_the_line(scripts: Scripts) -> None:
    for h in ("a", "b", "c"):
        scripts("register", h, TOKEN[h], 100)
    scripts("match", "a", TOKEN["a"], 1, 0, 200)
    scripts("match", "a", TOKEN["a"], 1, 0, 200)
    assert scripts("connect", "b", TOKEN["b"], 2, 1, 300) == ["OK", "1", "a", "1"]
    assert scripts("match", "c", TOKEN["c"], 3, 0, 400) == ["QUEUED"]  # nobody else waits


def test_cancel(scripts: Scripts) -> None:
    for h in ("a", "b"):
        scripts("register", h, TOKEN[h], 100)
    assert scripts("cancel", "a", TOKEN["a"], 1) == ["NOT_WAITING"]
    scripts("match", "a", TOKEN["a"], 1, 1, 200)
    assert scripts("cancel", "a", TOKEN["a"], 1) == ["OK"]
    assert scripts.r.zcard("mm:line") == 0 and scripts.r.scard("mm:new") == 0
    assert scripts("match", "b", TOKEN["b"], 2, 0, 300) == ["QUEUED"]
    scripts("connect", "a", TOKEN["a"], 1, 2, 400)
    assert scripts("cancel", "b", TOKEN["b"], 2) == ["TALKING", "1", "1", "a"]


def test_names_are_unique_without_regard_to_case(scripts: Scripts) -> None:
    for h in ("a", "b", "b"):
        scripts("register", h, TOKEN[h], 100)
    assert scripts("name", "a", TOKEN["a"], 1, "Ann") == ["OK"]
    assert scripts("name", "b", TOKEN["b"], 2, "aNN") == ["TAKEN"]
    assert scripts("name", "a", TOKEN["a"], 1, "ANN") == ["OK"]  # its own, in another case
    assert scripts("connect", "b", TOKEN["b"], 2, 0, 200, "ann") == ["OK", "1", "a", "1"]
    assert scripts("connect", "b", TOKEN["b"], 3, 0, 200, "Bo") == ["NONAME"]
    assert scripts("connect", "b", TOKEN["b"], 3, 0, 200, "aNn") == ["BUSY", "1"]
    assert scripts("name", "a", TOKEN["a"], 1, "") == ["OK"]  # dropped
    assert scripts("name", "b", TOKEN["b"], 3, "ann") == ["OK"]
    assert scripts.r.hgetall("mm:name") == {"3": "ann"}
    assert scripts.r.hgetall("mm:names") == {"ann": "3"}


def test_drop_and_reaping_free_the_name_and_the_place_in_the_line(scripts: Scripts) -> None:
    for h in ("a", "b", "b"):
        scripts("register", h, TOKEN[h], 100)
    for cid, host, name in ((1, "a", "x"), (2, "b", "y"), (3, "b", "z")):
        scripts("name", host, TOKEN[host], cid, name)
    scripts("connect", "b", TOKEN["b"], 2, 3, 200)
    scripts("goodbye", "b", TOKEN["b"], 2, 1)
    scripts("match", "b", TOKEN["b"], 2, 1, 300)
    scripts("match", "b", TOKEN["b"], 3, 0, 400)  # not with 2, which asked for someone new
    assert scripts.r.zrange("mm:line", 0, -1) == ["2", "3"]
    scripts("drop", "a", TOKEN["a"], 1)
    assert scripts.r.hgetall("mm:names") == {"y": "2", "z": "3"}
    scripts.r.zadd("mm:alive", {"b": 0})  # b stops beating
    scripts("beat", "a", TOKEN["a"], ALIVE_MS, 1, "e1")
    for key in ("mm:line", "mm:new", "mm:names", "mm:name", "mm:last_peer"):
        assert not scripts.r.exists(key), key


def test_sync_gives_back_names_and_the_line_and_keeps_a_name_held_elsewhere(
    scripts: Scripts,
) -> None:
    scripts("register", "b", TOKEN["b"], 100)  # 1, on b
    scripts("name", "b", TOKEN["b"], 1, "Ann")
    # a comes back with 2 (named ann, which 1 holds now) and 3 (waiting with NEW)
    got = scripts.join("a", ((2, 50, 0, 0, 0, "ann", 0, 0), (3, 50, 0, 0, 0, "Cy", 700, 1)))
    assert got.unnamed == [2]
    assert scripts.r.hgetall("mm:names") == {"ann": "1", "cy": "3"}
    assert scripts.r.zrange("mm:line", 0, -1, withscores=True) == [("3", 700.0)]
    assert scripts.r.smembers("mm:new") == {"3"}
    got = scripts.join("a", ((2, 50, 0, 0, 0, "Di", 0, 0), (3, 50, 0, 0, 0, "", 0, 0)))
    assert got.unnamed == []
    assert scripts.r.hgetall("mm:name") == {"1": "Ann", "2": "Di"}
    assert scripts.r.zcard("mm:line") == 0


def test_requeue_puts_a_free_client_at_the_head_of_the_line(scripts: Scripts) -> None:
    for h in ("a", "a", "b"):
        scripts("register", h, TOKEN[h], 100)
    scripts("match", "b", TOKEN["b"], 3, 0, 500)
    assert scripts("requeue", "a", TOKEN["a"], 1, 0) == 1
    assert scripts("requeue", "a", TOKEN["a"], 1, 0) == 0  # in it already
    assert scripts.r.zrange("mm:line", 0, -1) == ["1", "3"]
    assert scripts("match", "a", TOKEN["a"], 2, 0, 600) == ["OK", "1", "a", "1"]


NAMES = ("ann", "ANN", "Bo", "bo", "")


class SharedTable(RuleBasedStateMachine):
    """Random requests from three hosts; Redis must answer as the model does."""

    scripts: Scripts

    def __init__(self) -> None:
        super().__init__()
        self.s = SharedTable.scripts
        self.s.r.flushall()
        self.s("beat", "a", TOKEN["a"], ALIVE_MS, 1, "e")
        self.s.r.delete("mm:rebuild")
        for h in HOSTS:
            self.s.join(h)
        self.owner: dict[int, str] = {}
        self.peer: dict[int, int] = {}
        self.sid = 0
        self.clock = 0  # stamps: since when a client holds its id, and waits
        self.since: dict[int, int] = {}
        self.line: dict[int, tuple[int, bool]] = {}  # cid -> (waiting since, NEW)
        self.names: dict[int, str] = {}
        self.last: dict[int, tuple[int, int]] = {}  # cid -> (last partner, its since)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _pair(self, req: int, target: int) -> None:
        self.sid += 1
        self.peer[req], self.peer[target] = target, req
        self.line.pop(req, None)
        self.line.pop(target, None)

    def _end(self, cid: int) -> None:
        other = self.peer.pop(cid)
        del self.peer[other]
        self.last[cid], self.last[other] = (other, self.since[other]), (cid, self.since[cid])

    def _gone(self, cid: int) -> None:
        if cid in self.peer:
            self._end(cid)
        for table in (self.owner, self.since, self.line, self.names, self.last):
            table.pop(cid, None)

    def _smallest_free(self) -> int:
        i = 1
        while i in self.owner:
            i += 1
        return i

    @rule(host=st.sampled_from(HOSTS))
    def register(self, host: str) -> None:
        since = self._tick()
        got = self.s("register", host, TOKEN[host], since)
        cid = self._smallest_free()
        assert got == ["OK", str(cid)]
        self.owner[cid], self.since[cid] = host, since

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        req = data.draw(st.sampled_from(sorted(self.owner)))
        target = data.draw(st.integers(1, max(self.owner) + 1))
        got = self.s("connect", self.owner[req], TOKEN[self.owner[req]], req, target, 10**9)
        if req in self.peer:
            assert got[0] == "TALKING" and int(got[1]) == self.peer[req]
        elif req == target:
            assert got == ["SELF"]
        elif target not in self.owner:
            assert got == ["OFFLINE", str(target)]
        elif target in self.peer:
            assert got == ["BUSY", str(target)]
        else:
            self._pair(req, target)
            assert got == ["OK", str(self.sid), self.owner[target], str(target)]

    @precondition(lambda self: self.owner)
    @rule(data=st.data(), new=st.booleans())
    def match(self, data: st.DataObject, new: bool) -> None:
        req = data.draw(st.sampled_from(sorted(self.owner)))
        stamp = self._tick()
        got = self.s("match", self.owner[req], TOKEN[self.owner[req]], req, int(new), stamp)
        if req in self.peer:
            assert got[0] == "TALKING" and int(got[1]) == self.peer[req]
            return
        if req in self.line:
            assert got == ["WAITING"]
            return
        for other in sorted(self.line, key=lambda c: self.line[c][0]):
            if new and self.last.get(req) == (other, self.since[other]):
                continue
            if self.line[other][1] and self.last.get(other) == (req, self.since[req]):
                continue
            self._pair(req, other)
            assert got == ["OK", str(self.sid), self.owner[other], str(other)]
            return
        assert got == ["QUEUED"]
        self.line[req] = (stamp, new)

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.owner)))
        got = self.s("cancel", self.owner[cid], TOKEN[self.owner[cid]], cid)
        if cid in self.peer:
            assert got[0] == "TALKING"
        else:
            assert got == (["OK"] if self.line.pop(cid, None) else ["NOT_WAITING"])

    @precondition(lambda self: self.owner)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def name(self, data: st.DataObject, name: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.owner)))
        got = self.s("name", self.owner[cid], TOKEN[self.owner[cid]], cid, name)
        holder = [c for c, n in self.names.items() if name and n.lower() == name.lower()]
        if holder and holder != [cid]:
            assert got == ["TAKEN"]
            return
        assert got == ["OK"]
        self.names.pop(cid, None)
        if name:
            self.names[cid] = name

    @precondition(lambda self: self.peer)
    @rule(data=st.data())
    def goodbye(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.peer)))
        sid = int(self.s.r.hget("mm:session", str(cid)))
        got = self.s("goodbye", self.owner[cid], TOKEN[self.owner[cid]], cid, sid)
        assert got == ["OK", str(self.peer[cid])]
        self._end(cid)

    @precondition(lambda self: self.owner)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.owner)))
        host = self.owner[cid]
        assert self.s("drop", host, TOKEN[host], cid) == 1
        self._gone(cid)

    @rule(host=st.sampled_from(("b", "c")))
    def host_dies(self, host: str) -> None:
        self.s.r.zadd("mm:alive", {host: 0})
        self.s("beat", "a", TOKEN["a"], ALIVE_MS, 1, "e")
        for cid in [c for c, h in self.owner.items() if h == host]:
            self._gone(cid)
        assert self.s.join(host).refused == []  # it comes back, with no clients

    @invariant()
    def redis_says_what_the_model_says(self) -> None:
        r = self.s.r
        assert {int(c): h for c, h in r.hgetall("mm:owner").items()} == self.owner
        assert {int(c): int(p) for c, p in r.hgetall("mm:peer").items()} == self.peer
        sessions = r.hgetall("mm:session")
        for cid, peer in self.peer.items():
            assert sessions[str(cid)] == sessions[str(peer)]  # one session, both ends
        for h in HOSTS:
            mine = {c for c, o in self.owner.items() if o == h}
            assert {int(c) for c in r.smembers(f"mm:clients:{h}")} == mine
        assert r.zrange("mm:line", 0, -1) == [
            str(c) for c in sorted(self.line, key=lambda c: self.line[c][0])
        ]
        assert r.smembers("mm:new") == {str(c) for c, (_, new) in self.line.items() if new}
        assert r.hgetall("mm:name") == {str(c): n for c, n in self.names.items()}
        assert r.hgetall("mm:names") == {n.lower(): str(c) for c, n in self.names.items()}
        assert r.hgetall("mm:last_peer") == {
            str(c): f"{p}|{since}" for c, (p, since) in self.last.items()
        }


def test_random_requests_from_three_hosts(server: RedisServer) -> None:
    SharedTable.scripts = Scripts(server.client())
    runner = SharedTable.TestCase
    runner.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    runner().runTest()


def test_a_sync_that_finds_redis_empty_starts_the_rebuild_too(scripts: Scripts) -> None:
    """A host whose stream read fails (NOGROUP) may SYNC before any heartbeat sees the
    empty Redis: no id may be handed out before the other hosts are back either way."""
    scripts.r.flushall()
    assert scripts("register", "a", TOKEN["a"], 0) == ["LOST"]
    scripts.join("a", epoch="e1")
    assert scripts.r.exists("mm:rebuild")
    assert scripts("register", "a", TOKEN["a"], 0) == ["WAIT"]
