"""The WebSocket port's HTTP side, without I/O: the page, and the answer to each request.

A connection to ``--ws-port`` speaks HTTP/1.1 until it upgrades. h11 parses its
request (``workers.websocket``) and ``answer`` decides what it gets: the page
at ``/``, an upgrade at ``/ws`` for a page of an allowed origin (or a client
that is no browser page, which sends no ``Origin``), and a status with one line
of text for anything else. Every plain answer closes the connection: a page
makes one request and then opens its WebSocket, so keeping the connection
would only hold a descriptor.

The Origin check is what stops a page of another site, open in someone's
browser, from chatting in their name: browsers send ``Origin`` with every
WebSocket upgrade and let no script change it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from matchmaker.drops import Reason

#: Where the page is served, and where its WebSocket connects.
PAGE_PATH, SOCKET_PATH = b"/", b"/ws"

#: The page, shipped in this package beside this module.
PAGE_FILE = "chat.html"

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Page:
    """The page's bytes and its Content-Security-Policy.

    The script and the style are inside the page; the policy allows exactly
    those two (by their SHA-256) and a WebSocket to the page's own origin, and
    nothing else: no other script, no frame, no form, no fetch elsewhere.
    """

    html: bytes
    csp: str

    @classmethod
    def load(cls) -> Page:
        html = resources.files(__package__).joinpath(PAGE_FILE).read_bytes()
        return cls(html, policy(html))


def policy(html: bytes) -> str:
    """The Content-Security-Policy for ``html``: its inline script and style, by hash."""

    def hashes(tag: str) -> str:
        found = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), html, re.S)
        digests = (base64.b64encode(hashlib.sha256(body).digest()).decode() for body in found)
        return " ".join(f"'sha256-{d}'" for d in digests) or "'none'"

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A plain HTTP answer: a status, its headers and body; the connection closes after it.

    ``drop`` is set when a would-be WebSocket client is refused: the reason and
    the detail of its drop line (``matchmaker.drops``).
    """

    status: int
    headers: Headers
    body: bytes
    drop: tuple[Reason, str] | None = None


def header(headers: Headers, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, as h11 gives names); None if absent."""
    for key, value in headers:
        if key == name:
            return value
    return None


def text(status: int, line: str, drop: tuple[Reason, str] | None = None, **more: str) -> Answer:
    """An answer of one line of plain text."""
    body = (line + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"connection", b"close"),
    ]
    headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in more.items()]
    return Answer(status, headers, body, drop)


def page_answer(page: Page) -> Answer:
    """The page: revalidated on every load (``no-cache``), so a new server's page is used."""
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(page.html)).encode()),
        (b"content-security-policy", page.csp.encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"connection", b"close"),
    ]
    return Answer(200, headers, page.html)


def own_origin(headers: Headers, secure: bool) -> str | None:
    """The origin of a page served on this port under the ``Host`` the client named."""
    host = header(headers, b"host")
    if not host:
        return None
    return f"{'https' if secure else 'http'}://{host.decode('latin-1').lower()}"


def origin_allowed(headers: Headers, origins: tuple[str, ...], secure: bool) -> bool:
    """Whether a WebSocket upgrade may come from the page that asks (``--ws-origin``).

    No ``Origin``: the client is no browser page, and nothing to guard against.
    """
    origin = header(headers, b"origin")
    if origin is None:
        return True
    seen = origin.decode("latin-1").lower()
    if origins:
        return "*" in origins or seen in origins
    return seen == own_origin(headers, secure)


def wants_upgrade(headers: Headers) -> bool:
    """``Connection: upgrade`` and ``Upgrade: websocket``, as RFC 6455 section 4.2.1 asks."""
    connection = (header(headers, b"connection") or b"").lower()
    tokens = {token.strip() for token in connection.split(b",")}
    return b"upgrade" in tokens and (header(headers, b"upgrade") or b"").lower() == b"websocket"


def answer(
    method: bytes, target: bytes, headers: Headers, page: Page, origins: tuple[str, ...],
    secure: bool,
) -> Answer | None:  # fmt: skip
    """What a request gets; None: upgrade it to a WebSocket (wsproto checks the rest)."""
    path = target.partition(b"?")[0]
    if path not in (PAGE_PATH, SOCKET_PATH):
        return text(404, "404 Not Found: the page is at / and the WebSocket at /ws")
    allow = "GET, HEAD" if path == PAGE_PATH else "GET"
    if method not in (b"GET", b"HEAD") or (method == b"HEAD" and path == SOCKET_PATH):
        return text(405, f"405 Method Not Allowed: only {allow} here", allow=allow)
    if path == PAGE_PATH:
        return page_answer(page)
    if not wants_upgrade(headers):
        return text(426, "426 Upgrade Required: /ws is a WebSocket", upgrade="websocket")
    if not origin_allowed(headers, origins, secure):
        origin = (header(headers, b"origin") or b"").decode("latin-1")
        why = f"Origin {origin} is not allowed (--ws-origin)"
        return text(403, f"403 Forbidden: {why}", (Reason.ORIGIN, why))
    return None
