"""ipc.messages: every queue message survives pickling, alone and in a batch."""

from __future__ import annotations

import pickle
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc import messages as m
from wire import replies as r
from wire.errors import ErrorCode

CLASSES = sorted(
    set(typing.get_args(m.ToMatchmaker)) | set(typing.get_args(m.ToWorker)),
    key=lambda cls: cls.__name__,
)

#: Awkward but legal values for each field type.
VALUES = {int: 2**40 + 7, str: "hello \u00e9\U0001f600 \x00 \r", bool: True}


def sample(cls):
    """One instance of ``cls`` with every field set to a non-default value."""
    if cls is m.Hello:  # the one message made of messages
        state = m.ClientState(3, 2**40, 9, 4)
        return m.Hello((state, state), (m.Get(2, True, 6), m.Drop(5, 7, True), m.Register(8)))
    if cls is m.Placed:  # carries the request the move answers
        return m.Placed(4, 2**40, 9, m.Connect(2**40, 3, 4))
    if cls in (m.Answer, m.Refuse):  # carry a typed reply, packed
        return cls.of(2**40, r.Error(ErrorCode.OFFLINE, VALUES[str]))
    hints = typing.get_type_hints(cls)
    return cls(**{name: VALUES[hints[name]] for name in cls._fields})


SAMPLES = [sample(cls) for cls in CLASSES]

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def test_unions_hold_every_message_class():
    defined = {
        c
        for c in vars(m).values()
        if isinstance(c, type) and issubclass(c, tuple) and c.__module__ == m.__name__
    }
    assert set(CLASSES) | {m.ClientState} == defined
    assert not set(typing.get_args(m.ToMatchmaker)) & set(typing.get_args(m.ToWorker))
    assert {c.__name__ for c in typing.get_args(m.ToMatchmaker)} >= {
        "Register",
        "Get",
        "Connect",
        "Relay",
        "Goodbye",
        "Drop",
    }
    assert {c.__name__ for c in typing.get_args(m.ToWorker)} >= {
        "Welcome",
        "Answer",
        "Refuse",
        "Paired",
        "Deliver",
        "Ended",
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("message", SAMPLES, ids=lambda s: type(s).__name__)
def test_message_round_trips(message, protocol):
    back = pickle.loads(pickle.dumps(message, protocol=protocol))
    assert back == message
    assert type(back) is type(message)
    assert back._asdict() == message._asdict()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batch_round_trips(protocol):
    batch = SAMPLES * 3
    back = pickle.loads(pickle.dumps(batch, protocol=protocol))
    assert back == batch
    assert [type(x) for x in back] == [type(x) for x in batch]
    tagged = pickle.loads(pickle.dumps((2, batch), protocol=protocol))
    assert tagged == (2, batch)


@given(st.text(), st.integers(0, 2**62))
def test_relay_and_deliver_carry_any_text(text, number):
    batch = [m.Relay(number, number, text), m.Deliver(number, number, text)]
    assert pickle.loads(pickle.dumps(batch)) == batch


def test_messages_are_immutable_and_have_named_fields():
    paired = m.Paired(key=7, session=5, peer=2, peer_worker=1, peer_key=9, requested=True)
    assert paired == (7, 5, 2, 1, 9, True)
    assert (paired.key, paired.peer_worker, paired.peer_key) == (7, 1, 9)
    assert m.Relay._fields == ("cid", "session", "text", "seq")
    assert m.Deliver._fields == ("key", "session", "text", "seq")
    with pytest.raises(AttributeError):
        paired.key = 8  # type: ignore[misc]


def test_the_wire_tags_name_every_message_class_once():
    assert sorted(m.CLASSES, key=lambda cls: cls.__name__) == CLASSES


@pytest.mark.parametrize("message", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_to_wire_and_back_gives_the_same_message(message):
    wire = pickle.loads(pickle.dumps(m.to_wire([message, message])))
    assert all(type(t) is tuple for t in wire)  # plain tuples: pickled without Python calls
    back = m.from_wire(wire)
    assert back == [message, message]
    assert all(type(b) is type(message) for b in back)
