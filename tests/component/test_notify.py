"""sd_notify by hand (``matchmaker.notify``): a datagram to ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import socket

from matchmaker.notify import notify


def test_notify_reaches_a_socket_by_path_and_in_the_abstract_namespace(tmp_path):
    path = str(tmp_path / "notify")
    for name, bound in ((path, path), ("@mm-test-notify", "\0mm-test-notify")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(bound)
            assert notify("READY=1", {"NOTIFY_SOCKET": name})
            assert sock.recv(64) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
