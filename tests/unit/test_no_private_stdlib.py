"""No attribute of the standard library whose name starts with ``_``, anywhere in the project.

``ipc/channel.py`` once read a ``multiprocessing.Queue``'s ``_reader`` and
``_writer``, built queues on a context of its own, and wrote their frame
header itself: private details that any Python release may change without a
word. The project uses public APIs only; its own private names are its own.

What counts, read with ``ast`` from every Python file of the project:

- importing a private module or name of the standard library
  (``import _thread``, ``from multiprocessing.connection import _ConnectionBase``);
- a private attribute reached from a standard-library module or from a name
  imported from one (``os._exit``, ``multiprocessing.queues._ForkingPickler``);
- a private attribute of any other object (``q._writer``, and ``getattr(q,
  "_writer")``) unless the project defines that name itself and no
  standard-library package the file imports defines it on its objects: so
  ``q._reader`` is caught even where a class of the project has a ``_reader``.

``self._x`` and ``cls._x`` are the project's own. So are the methods of
``collections.namedtuple`` (``_replace``, ``_asdict``, ``_fields``,
``_make``): public API, named with ``_`` only so as not to clash with fields.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("wire", "ipc", "matchmaker", "workers", "client", "scripts", "tests")

NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})

#: An excerpt of ``ipc/channel.py`` as it was (96d493c), and more of the kind.
OLD_CHANNEL = """
import multiprocessing.queues
import os
from multiprocessing.connection import _ConnectionBase


class Sender:
    def __init__(self, q):
        self._fd: int = q._writer.fileno()


class Receiver:
    def __init__(self, q):
        self._reader = q._reader


def one_to_one_queue():
    lock = getattr(multiprocessing.queues.Queue(), "_rlock")
    os._exit(1)
"""


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def project_files() -> list[Path]:
    return sorted(path for top in PROJECT for path in (ROOT / top).rglob("*.py"))


def defined_names(tree: ast.AST) -> set[str]:
    """Private names a module defines for its objects: ``self._x = ...``, class and module
    level names (methods, attributes, ``__slots__``), and its module-level functions."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
        elif isinstance(node, (ast.ClassDef, ast.Module)):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(item.name)
                targets = item.targets if isinstance(item, ast.Assign) else []
                if isinstance(item, ast.AnnAssign):
                    targets = [item.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
                if isinstance(item, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets
                ):
                    names.update(
                        c.value for c in ast.walk(item.value) if isinstance(c, ast.Constant)
                    )
    return {name for name in names if isinstance(name, str) and is_private(name)}


@functools.cache
def stdlib_defines(package: str) -> frozenset[str]:
    """The private names a standard-library package (or module) defines for its objects."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return frozenset()  # built in or compiled: nothing to read
    origin = Path(spec.origin)
    files = origin.parent.rglob("*.py") if spec.submodule_search_locations else [origin]
    names: set[str] = set()
    for path in files:
        names |= defined_names(ast.parse(path.read_bytes()))
    return frozenset(names)


@functools.cache
def project_defines() -> frozenset[str]:
    names: set[str] = set()
    for path in project_files():
        names |= defined_names(ast.parse(path.read_bytes()))
    return frozenset(names)


def stdlib_bindings(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names bound to standard-library modules or their members, top packages imported)."""
    bound: set[str] = set()
    packages: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_stdlib(alias.name):
                    bound.add(alias.asname or alias.name.split(".")[0])
                    packages.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if is_stdlib(node.module):
                bound.update(alias.asname or alias.name for alias in node.names)
                packages.add(node.module.split(".")[0])
    return bound, packages


def accesses(tree: ast.AST) -> Iterator[tuple[ast.AST, ast.expr, str]]:
    """Each ``base.name`` and ``getattr(base, "name")`` (or set/has/delattr), name private."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            yield node, node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            yield node, node.args[0], node.args[1].value


def root_name(expr: ast.expr) -> str | None:
    """``a`` for ``a``, ``a.b`` and ``a.b.c``; None for anything else."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def violations(source: str | bytes, own: frozenset[str]) -> list[str]:
    """Each use of a private standard-library name in ``source``, as ``line: code``."""
    tree = ast.parse(source)
    lines = (source.decode() if isinstance(source, bytes) else source).splitlines()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(
                is_stdlib(a.name) and any(map(is_private, a.name.split("."))) for a in node.names
            ):
                found.append((node.lineno, "private module"))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(a.name for a in node.names)]
            if is_stdlib(node.module) and any(is_private(p) for n in names for p in n.split(".")):
                found.append((node.lineno, "private import"))
    bound, packages = stdlib_bindings(tree)
    theirs = frozenset().union(*(stdlib_defines(p) for p in packages)) if packages else frozenset()
    for node, base, name in accesses(tree):
        if name in NAMEDTUPLE_API:
            continue
        root = root_name(base)
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        if root in bound and root not in ("self", "cls"):
            found.append((node.lineno, f"{name} of a standard-library module"))
        elif name in theirs:
            found.append((node.lineno, f"{name} is private to the standard library"))
        elif name not in own:
            found.append((node.lineno, f"{name} is not the project's own"))
    return [f"{line}: {lines[line - 1].strip()}  ({why})" for line, why in sorted(found)]


def test_no_file_of_the_project_uses_a_private_name_of_the_standard_library():
    own = project_defines()
    found = {
        str(path.relative_to(ROOT)): hits
        for path in project_files()
        if (hits := violations(path.read_bytes(), own))
    }
    assert found == {}


def test_the_old_channel_is_caught_even_where_the_project_has_a_reader_of_its_own():
    own = project_defines() | {"_reader", "_fd"}  # as when Receiver kept ``self._reader``
    found = violations(OLD_CHANNEL, own)
    assert [hit.split(":")[0] for hit in found] == ["4", "9", "14", "18", "19"]
    assert "q._writer" in found[1] and "q._reader" in found[2]
    assert "_ConnectionBase" in found[0] and "os._exit" in found[4] and "_rlock" in found[3]


def test_the_projects_own_private_names_and_the_namedtuple_api_pass():
    source = """
import collections

class Box:
    def __init__(self):
        self._inside = 1

    def peek(self, other):
        return other._inside, self._inside

Point = collections.namedtuple("Point", "x y")
moved = Point(1, 2)._replace(x=3)._asdict()
"""
    assert violations(source, defined_names(ast.parse(source))) == []
