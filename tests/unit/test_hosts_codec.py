"""The records hosts leave on each other's Redis streams (``ipc.hosts``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc import hosts

ids = st.integers(min_value=1, max_value=2**53)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"))
names = st.text(min_size=1).filter(lambda s: "|" not in s)

events = st.one_of(
    st.builds(hosts.Line, ids, ids, ids, text),
    st.builds(hosts.Confirmed, ids, ids, st.integers(min_value=0, max_value=2**53)),
    st.builds(hosts.EndedBy, ids, ids, ids),
    st.builds(hosts.PairedWith, ids, ids, ids, names),
)


@given(events)
def test_every_event_reads_back_as_written(event: hosts.Event) -> None:
    assert hosts.decode(hosts.encode(event)) == event


def test_a_line_may_hold_the_separator() -> None:
    line = hosts.Line(3, 7, 1, "a|b||c|")
    assert hosts.encode(line) == "L|3|7|1|a|b||c|"
    assert hosts.decode("L|3|7|1|a|b||c|") == line


def test_the_scripts_records_read_as_events() -> None:
    # written by the Lua scripts in matchmaker.shared, not by encode()
    assert hosts.decode("P|2|5|1|host-a:5000") == hosts.PairedWith(2, 5, 1, "host-a:5000")
    assert hosts.decode("E|2|5|1") == hosts.EndedBy(2, 5, 1)


@pytest.mark.parametrize("record", ["", "X|1|2", "L|1|2", "C|1|x|3", "E|1|2|3|4", "P|1|2"])
def test_anything_else_is_a_value_error(record: str) -> None:
    with pytest.raises(ValueError):
        hosts.decode(record)
