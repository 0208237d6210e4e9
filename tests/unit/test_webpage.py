"""What the WebSocket port answers each request (``workers.webpage``), without sockets."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from matchmaker.drops import Reason
from workers import webpage
from workers.webpage import Page, answer
from workers.websocket import close_code

PAGE = Page.load()
UPGRADE = [(b"host", b"chat.example.org:8080"), (b"connection", b"keep-alive, Upgrade"),
           (b"upgrade", b"websocket")]  # fmt: skip


def ask(method: bytes, target: bytes, headers=(), origins=(), secure=False):
    return answer(method, target, list(headers), PAGE, tuple(origins), secure)


def test_the_page_is_served_with_a_policy_that_allows_its_own_script_and_style_only():
    got = ask(b"GET", b"/")
    assert got is not None and got.status == 200 and got.body == PAGE.html
    headers = dict(got.headers)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    csp = headers[b"content-security-policy"].decode()
    for tag in ("script", "style"):
        (body,) = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), PAGE.html, re.S)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}';" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert b"<script src" not in PAGE.html and b"http" not in PAGE.html.split(b"<script>")[0]


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"GET", b"/index.html", 404),
        (b"GET", b"/ws/", 404),
        (b"POST", b"/", 405),
        (b"PUT", b"/ws", 405),
        (b"HEAD", b"/ws", 405),
        (b"GET", b"/ws", 426),
    ],
)
def test_what_is_not_the_page_or_an_upgrade_gets_a_status(method, target, status):
    got = ask(method, target)
    assert got is not None and got.status == status and got.drop is None
    assert got.body.decode().startswith(str(status))


def test_an_upgrade_from_the_pages_own_origin_or_no_browser_is_taken():
    assert ask(b"GET", b"/ws?x", UPGRADE) is None
    assert ask(b"GET", b"/ws", [*UPGRADE, (b"origin", b"http://Chat.Example.org:8080")]) is None
    secure = [*UPGRADE, (b"origin", b"https://chat.example.org:8080")]
    assert ask(b"GET", b"/ws", secure, secure=True) is None


@pytest.mark.parametrize(
    ("origin", "origins", "secure"),
    [
        (b"http://evil.example", (), False),
        (b"https://chat.example.org:8080", (), False),  # another scheme is another origin
        (b"http://chat.example.org:8080", (), True),
        (b"http://chat.example.org:8080", ("https://chat.example.org",), False),
    ],
)
def test_an_upgrade_from_another_origin_is_forbidden_and_logged(origin, origins, secure):
    got = ask(b"GET", b"/ws", [*UPGRADE, (b"origin", origin)], origins, secure)
    assert got is not None and got.status == 403
    assert got.drop is not None and got.drop[0] is Reason.ORIGIN


def test_listed_origins_and_the_wildcard():
    evil = [*UPGRADE, (b"origin", b"http://evil.example")]
    assert ask(b"GET", b"/ws", evil, ("http://evil.example",)) is None
    assert ask(b"GET", b"/ws", evil, ("*",)) is None


def test_headers_are_read_as_h11_gives_them():
    assert webpage.wants_upgrade(UPGRADE)
    assert not webpage.wants_upgrade([(b"upgrade", b"websocket")])
    assert webpage.own_origin([], False) is None


@pytest.mark.parametrize(
    ("last", "code"),
    [("BYE", 1000), ("OUTAGE", 1001), ("ERROR IDLE", 1008), ("ERROR FULL", 1013),
     ("ERROR SLOW_CONSUMER", 1008), ("ERROR WHATEVER", 1011), ("", 1000)],
)  # fmt: skip
def test_the_close_code_follows_the_last_line(last, code):
    assert close_code(last) == code
