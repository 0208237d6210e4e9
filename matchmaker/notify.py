"""systemd's readiness protocol (sd_notify), by hand: one datagram to ``$NOTIFY_SOCKET``.

Under a unit of ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` and waits for
``READY=1`` before it counts the service as started (and starts what comes
after it); ``STOPPING=1`` tells it a stop is under way. Anywhere else the
variable is unset and this does nothing. The protocol is one ``AF_UNIX``
datagram of ``KEY=VALUE`` lines; a name starting with ``@`` is in the
abstract namespace (a leading NUL byte). No dependency needed for that.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("matchmaker.notify")


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``) to systemd; whether it went.

    Never waits and never raises: a service manager that does not listen must
    not stop the server.
    """
    env = os.environ if environ is None else environ
    where = env.get("NOTIFY_SOCKET", "")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify %s of %s: %s", where, state, exc)
        return False
    return True
