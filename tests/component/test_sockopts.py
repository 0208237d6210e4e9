"""A socket accepted on a tuned listener carries its TCP options: the workers rely on it."""

from __future__ import annotations

import socket

from ipc import sockopts


def test_an_accepted_socket_inherits_the_listeners_options() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sockopts.tune(listener)
        with socket.create_connection(listener.getsockname()) as client:
            conn, _ = listener.accept()
            with conn:
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == (
                    sockopts.KEEPALIVE_IDLE
                )
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == (
                    sockopts.KEEPALIVE_INTERVAL
                )
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == (
                    sockopts.KEEPALIVE_COUNT
                )
            assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0  # not ours
