"""The TLS port's server side: its context, and how a failed handshake is told in the log.

The acceptor never touches TLS: it passes the socket like any other, and the
worker that serves the client runs the handshake on its own event loop
(``Hub.adopt``), bounded by ``--tls-handshake-timeout``. A client gets its id
only once the handshake is done, so one that never finishes it holds a
descriptor until the deadline and nothing else. A TLS connection cannot move
to another worker (its session keys live in this process), so its clients
register as pinned and their sessions across workers are relayed.
"""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The context every TLS connection of this worker is served with: TLS 1.2 at least.

    Raises ``ssl.SSLError`` or ``OSError`` for a certificate or key that cannot be used.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


#: OpenSSL's reasons for a first record that is no TLS at all.
NOT_TLS = {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
           "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}  # fmt: skip


def handshake_failure(exc: BaseException, timeout: float) -> str:
    """Why a handshake failed, in a few words for the log line that says so."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = " (not TLS: a plain client on the TLS port?)" if reason in NOT_TLS else ""
        return f"TLS handshake failed: {reason.lower().replace('_', ' ')}{hint}"
    text = str(exc)
    if timed_out(exc):
        return f"TLS handshake not done within {timeout:g}s (--tls-handshake-timeout)"
    if isinstance(exc, ConnectionError) or not text:
        return f"TLS handshake cut short by the peer ({type(exc).__name__})"
    return f"TLS handshake failed: {text}"


def timed_out(exc: BaseException) -> bool:
    """Whether the handshake failed for want of time (asyncio's and uvloop's own words)."""
    return isinstance(exc, ConnectionAbortedError | TimeoutError) and "longer than" in str(exc)
