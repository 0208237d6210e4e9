"""Black-box fuzzing over real sockets: any bytes get protocol lines back, and hurt nobody."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.integration.harness import Client, pair
from wire.legacy import RECORD, sniff
from wire.replies import Unknown, parse_reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# bytes with a fair share of newlines, CRs, NULs, high bytes and command words
WORDS = [b"GET", b"get free", b"CONNECT ", b"CONNECT 1", b"PING", b"HELP", b"#GOODBYE#", b" "]
chunk = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b"\xff\xfe", b"\xc3", *WORDS]),
)
payload = st.lists(chunk, max_size=24).map(b"".join)


@pytest.fixture(scope="module")
def fuzz_server():
    from tests.integration.harness import Server

    server = Server("--max-line", "128")
    yield server
    server.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=payload)
def test_any_bytes_get_only_protocol_lines(fuzz_server, data):
    sent = data.replace(b"#CLOSE#", b"") + b"\n#GOODBYE#\n#GOODBYE#\nPING\n"
    assume(not sniff(sent[:RECORD]))  # the original client's record: test_legacy.py
    keeper_a, keeper_b = fuzz_server.client(), fuzz_server.client()
    pair(keeper_a, keeper_b)
    c = Client(fuzz_server.host, fuzz_server.port)
    try:
        c.welcome()
        c.send(sent)
        # whatever happened (even a session with a keeper), PONG comes last
        while (line := c.line()) != "PONG":
            assert not isinstance(parse_reply(line), Unknown), line
        keeper_a.send("still fine")
        keeper_b.expect("MSG still fine")
    finally:
        for x in (c, keeper_a, keeper_b):
            x.close()
