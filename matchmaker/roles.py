"""The one entry point every child process is spawned with.

A spawned child gets its target by reference, so whatever module the target
lives in, the supervisor has imported it too. The roles' modules pull in
asyncio, uvloop and ssl (the workers) or the table (the matchmaker); the
supervisor runs none of that. So it spawns ``enter`` with the role's module
by name, and only the child imports it. Keep this module free of imports.
"""

from __future__ import annotations

#: Each role's module, whose ``main`` is the process's entry point.
ACCEPTOR = "matchmaker.acceptor"
MATCHMAKER = "matchmaker.service"
WORKER = "workers.process"


def enter(module: str, *args: object) -> None:
    """Runs in the child: import ``module`` and call its ``main(*args)``."""
    __import__(module, fromlist=["main"]).main(*args)
