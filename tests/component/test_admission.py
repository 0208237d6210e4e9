"""matchmaker.admission and ipc.peers: per-address counts in real shared memory, time by hand."""

from __future__ import annotations

import multiprocessing

import pytest

from ipc.peers import PeerCounts, address_key
from matchmaker.admission import TIDY_EVERY, Admission
from matchmaker.drops import Reason

CTX = multiprocessing.get_context("spawn")
A, B = address_key("127.0.0.2"), address_key("127.0.0.3")


def test_an_ipv6_address_counts_by_its_64_and_a_mapped_ipv4_as_itself() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert address_key("::ffff:127.0.0.2") == A != B
    with pytest.raises(OSError):
        address_key("not an address")


def test_counts_add_up_over_the_workers_and_a_dead_workers_go() -> None:
    peers = PeerCounts(CTX, 3)
    for worker in (0, 1, 1, 2):
        peers.add(worker, A, 1)
    peers.add(2, B, 1)
    assert (peers.count(A), peers.count(B)) == (4, 1)
    peers.add(1, A, -1)  # a client moved from worker 1 ...
    peers.add(0, A, 1)  # ... to worker 0
    assert peers.count(A) == 4
    peers.down(1)
    assert (peers.count(A), peers.count(B)) == (3, 1)


def test_many_other_addresses_barely_add_to_one() -> None:
    """The sketch may count a few clients of other addresses, never fewer than the truth."""
    peers = PeerCounts(CTX, 2)
    for i in range(10_000):  # one client each from 10,000 other addresses
        peers.add(i % 2, address_key(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"), 1)
    for _ in range(50):
        peers.add(0, A, 1)
    assert 50 <= peers.count(A) <= 53


class Workers:
    """What the acceptor sees of the workers: their counts and their hand-overs taken."""

    def __init__(self) -> None:
        self.peers = PeerCounts(CTX, 2)
        self.received = [0, 0]
        self.handed = [0, 0]

    def hand(self, door: Admission, worker: int, peer: bytes) -> None:
        self.handed[worker] += 1
        door.handed(worker, self.handed[worker], peer)

    def take(self, worker: int, peer: bytes) -> None:
        """The worker counts the client, then the hand-over (``workers.handoff``)."""
        self.peers.add(worker, peer, 1)
        self.received[worker] += 1


def test_a_handed_over_client_counts_once_before_and_after_its_worker_takes_it() -> None:
    w = Workers()
    door = Admission(3, 0, w.peers, w.received)
    for worker in (0, 1):
        assert door.refusal(A, 0.0) is None
        w.hand(door, worker, A)
    assert door.live(A) == 2
    w.take(0, A)
    assert door.live(A) == 2  # the worker's now, not the acceptor's
    assert door.refusal(A, 0.0) is None
    w.hand(door, 0, A)
    assert door.refusal(A, 0.0) == (
        Reason.TOO_MANY,
        "3 connections from its address already (--max-per-ip 3)",
    )
    assert door.refusal(B, 0.0) is None
    w.take(1, A)
    w.take(0, A)
    w.peers.add(1, A, -1)  # one closed
    assert door.live(A) == 2 and door.in_hand == {}
    assert door.refusal(A, 0.0) is None


def test_new_connections_a_second_per_address() -> None:
    w = Workers()
    door = Admission(0, 2.0, None, w.received)
    assert [door.refusal(A, 10.0) is None for _ in range(3)] == [True, True, False]
    assert door.refusal(B, 10.0) is None
    assert door.refusal(A, 10.4) == (
        Reason.ACCEPT_RATE,
        "over 2 new connections a second (--accept-rate)",
    )
    assert door.refusal(A, 10.5) is None  # one more each half second
    door.tidy(10.0 + TIDY_EVERY)
    assert set(door.buckets) == set()  # full again: forgotten
