"""docs/ARCHITECTURE.md names real functions: every ``Class.method`` on a line's path exists."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"

MODULES = [
    "ipc.channel",
    "ipc.messages",
    "matchmaker.service",
    "matchmaker.table",
    "workers.connection",
    "workers.handoff",
    "workers.hub",
    "workers.migrate",
    "workers.output",
    "workers.parking",
    "workers.process",
    "workers.protocol",
    "workers.unconfirmed",
    "workers.webpage",
    "workers.websocket",
    "wire.dialects",
]


def classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == name:
                found[attr] = value
    return found


def test_every_class_and_method_the_page_names_exists() -> None:
    known = classes()
    named = set(re.findall(r"\b([A-Z][a-z][A-Za-z]*)\.([a-z_][a-z_]*)\b", DOC.read_text()))
    checked = {(cls, attr) for cls, attr in named if cls in known}
    assert len(checked) >= 30  # the page does name the path
    missing = sorted(f"{c}.{a}" for c, a in checked if not hasattr(known[c], a))
    assert missing == []
    unknown = sorted({c for c, _ in named} - set(known))
    assert unknown == []
