"""The wire protocol and the inter-process messages, as pure code.

Everything here except ``channel`` and ``fdpass`` is free of I/O: bytes and
values in, bytes and values out, so the server's workers and the terminal
client share one codec and the unit tests need no sockets.
"""
