"""The client's side of the TLS port: which certificates it trusts, and a failed handshake in words.

No I/O here but reading the CA file: the socket is ``client.app``'s.
"""

from __future__ import annotations

import ssl

#: What ``--insecure`` prints on stderr before it connects.
INSECURE_WARNING = (
    "client: warning: --insecure: the server's certificate is not checked; "
    "anyone on the way can read and change this chat"
)


def client_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """TLS 1.2 or newer; the server verified against ``cafile`` or the system's CAs.

    With ``insecure`` nothing is verified (the caller warns). Raises ``OSError``
    or ``ssl.SSLError`` for a CA file that cannot be used.
    """
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(exc: ssl.SSLError) -> str:
    """A failed handshake as the few words after ``cannot connect to HOST:PORT: ``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "failed"
        return (
            f"the server's certificate cannot be verified ({why}); "
            "--cafile FILE trusts another CA, --insecure skips the check"
        )
    reason = (exc.reason or str(exc)).lower().replace("_", " ")
    if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return f"TLS handshake failed ({reason}): is this the server's TLS port?"
    return f"TLS handshake failed ({reason})"
