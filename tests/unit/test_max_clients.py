"""``--max-clients``: 100,000 unless the workers' descriptors hold fewer, or as given."""

from __future__ import annotations

import resource

import pytest

from matchmaker import config
from matchmaker.config import FD_MARGIN, host_max_clients, parse_args
from matchmaker.table import DEFAULT_MAX_CLIENTS


@pytest.fixture
def hard_limit(monkeypatch):
    """Pretend the open-file hard limit is what the test sets."""
    limits = {"hard": 20_000}
    monkeypatch.setattr(config.resource, "getrlimit", lambda _which: (1024, limits["hard"]))
    return limits


def test_enough_workers_hold_the_default(hard_limit):
    """Under a hard limit of 20,000 per process, 6 workers hold 100,000 clients."""
    assert host_max_clients(6) == DEFAULT_MAX_CLIENTS == 100_000
    assert parse_args(["--workers", "8"]).max_clients == 100_000


def test_fewer_workers_hold_what_their_descriptors_allow(hard_limit):
    """2 workers under 20,000 descriptors each: a default of 100,000 would only promise
    clients the workers cannot take (the supervisor warned at every start)."""
    assert host_max_clients(2) == 2 * (20_000 - FD_MARGIN) == 39_488
    assert parse_args(["--workers", "2"]).max_clients == 39_488


def test_a_given_value_is_kept_even_past_the_descriptors(hard_limit):
    """What the operator asks for stands; the supervisor warns if it does not fit."""
    assert parse_args(["--workers", "2", "--max-clients", "100000"]).max_clients == 100_000
    assert parse_args(["--workers", "2", "--max-clients", "50"]).max_clients == 50


def test_no_hard_limit_is_the_default(hard_limit):
    hard_limit["hard"] = resource.RLIM_INFINITY
    assert host_max_clients(1) == DEFAULT_MAX_CLIENTS
