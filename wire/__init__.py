"""The wire protocol clients speak (docs/PROTOCOL.md), as pure code.

Framing (``codec`` for v1 lines, ``legacy`` for the original's records), what
a client sends (``commands``), what the server says (``replies``, ``errors``)
and how a connection writes it (``dialects``). No I/O here: bytes and values
in, bytes and values out, so the server's workers and the terminal client
share one model and the unit tests need no sockets. What crosses between the
server's own processes is ``ipc``'s.
"""
