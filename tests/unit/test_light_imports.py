"""The supervisor and the acceptor run no event loop, so they must not load one.

asyncio, ssl and uvloop cost about 7 MB of RSS in every process that imports
them; the 10,000-idle-clients budget has no room for that in processes that
never use them. Checked in a fresh interpreter, since this one has them loaded.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from matchmaker import roles

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("asyncio", "ssl", "uvloop", "workers.process", "matchmaker.service")


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_the_supervisor_parses_its_flags_and_starts_without_the_roles_modules() -> None:
    code = "import matchmaker.__main__\nfrom matchmaker.config import parse_args\nparse_args([])"
    assert loaded_after(code) == []


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_choosing_the_loop_does_not_import_it(loop: str) -> None:
    code = f"from matchmaker.config import parse_args\nparse_args(['--loop', '{loop}'])"
    assert loaded_after(code) == []


def test_the_acceptor_loads_no_event_loop() -> None:
    assert loaded_after("import matchmaker.acceptor") == []


def test_uvloop_is_found_only_with_its_compiled_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matchmaker.config import uvloop_available

    package = tmp_path / "uvloop"
    package.mkdir()
    (package / "__init__.py").write_text("raise AssertionError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "uvloop", raising=False)
    assert not uvloop_available()  # built for no interpreter: auto must pick asyncio
    from importlib.machinery import EXTENSION_SUFFIXES

    (package / f"loop{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert uvloop_available()


def test_enter_imports_the_role_module_and_runs_its_main(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    module = types.ModuleType("some_role")
    module.main = lambda *args: calls.append(args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "some_role", module)
    roles.enter("some_role", 1, "two")
    assert calls == [(1, "two")]


@pytest.mark.parametrize("name", [roles.ACCEPTOR, roles.MATCHMAKER, roles.WORKER])
def test_every_role_module_has_a_main(name: str) -> None:
    module = __import__(name, fromlist=["main"])
    assert callable(module.main)


def test_the_terminal_client_imports_the_wire_protocol_and_nothing_of_the_server() -> None:
    probe = (
        "import sys\nimport client.__main__, client.app\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('ipc', 'workers', 'matchmaker', 'wire'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = out.stdout.split()
    assert "wire.replies" in loaded and "wire.codec" in loaded
    assert [m for m in loaded if not m.startswith("wire")] == []
