"""The terminal client: ``python -m client HOST PORT``.

``session`` (with ``aliases`` and ``render``) is the pure view of one
connection; ``app`` is the asyncio shell around it, interactive with
prompt_toolkit when stdin and stdout are a terminal, line by line otherwise.
"""
