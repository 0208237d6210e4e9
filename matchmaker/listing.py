"""The answer to ``GET`` and ``GET FREE``, kept rendered block by block.

No I/O here. At 100,000 clients the ``CLIENTS`` line is about 1.2 MB; built
from every entry it took the matchmaker tens of milliseconds per ``GET``, then
as many again in the worker that formatted the tuples it was sent. Here each
block of ids (``ClientTable.block``) keeps its items' text, and the table's
stamp of the block says whether that text is still good: a ``GET`` renders
only the blocks that changed since the last one and joins the rest. The line
is exactly ``clients_line(table.clients(free_only))``.

It reads one host's table only: with ``--redis`` the shared table answers
``GET`` (``matchmaker.cluster``).
"""

from __future__ import annotations

from typing import Any

from matchmaker.table import ClientTable
from wire.replies import clients_items


class Rendered:
    """The ``CLIENTS`` line of a table, and of its FREE clients, re-rendered where it changed."""

    def __init__(self, table: ClientTable[Any]) -> None:
        self.table = table
        #: per variant (all, FREE only): per block, (the stamp it was rendered at, its items)
        self._parts: dict[bool, list[tuple[int, str]]] = {False: [], True: []}

    def line(self, free_only: bool = False) -> str:
        table, parts = self.table, self._parts[free_only]
        stamps, size = table.stamps, table.block
        if len(parts) > len(stamps):
            del parts[len(stamps) :]  # a restored table may have fewer blocks
        for block, stamp in enumerate(stamps):
            if block == len(parts):
                parts.append((-1, ""))
            if parts[block][0] != stamp:
                lo = block * size
                items = clients_items(table.clients_between(lo, lo + size, free_only))
                parts[block] = (stamp, items)
        return " ".join(["CLIENTS", *(items for _, items in parts if items)])
