"""Every process loads only what it uses: what each role imports is pinned here.

asyncio, ssl and uvloop cost about 7 MB of RSS in every process that imports
them; the 10,000-idle-clients budget has no room for that in processes that
never use them. The children are forks of the supervisor, so whatever the
supervisor imports is in every child's RSS too: it loads only what it runs and
what more than one process uses (``roles.preloaded``): the modules more than
one role shares, and with two workers or more the workers' own, which they
then share rather than each import. With one worker the acceptor and the
matchmaker load no event loop; a worker loads the WebSocket code (h11, wsproto,
the page) only with ``--ws-port``; ``prometheus_client`` is only loaded with
``--metrics-port``, redis only with ``--redis``, and hashlib's OpenSSL half
only where the page's hash or a random token needs it. Checked in a fresh
interpreter, since this one has them all loaded.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from matchmaker import roles

ROOT = Path(__file__).resolve().parents[2]

#: What no process loads unless it runs it.
WEB = ("h11", "wsproto", "http", "workers.websocket", "workers.webpage")
OPTIONAL = ("prometheus_client", "matchmaker.metrics", "redis", "hiredis", "matchmaker.cluster")
LOOP = ("asyncio", "ssl", "uvloop")
ROLES = ("workers.process", "matchmaker.service", "matchmaker.acceptor")
#: hashlib's OpenSSL half (``hashlib`` imports it): 0.6 MB of heap, and libcrypto's pages
#: where ssl has not loaded them
OPENSSL_HASHES = ("_hashlib",)
HEAVY = (*LOOP, *WEB, *OPTIONAL, *ROLES, "workers.tls", *OPENSSL_HASHES)


def loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


#: What the supervisor imports before its first fork: its own modules and ``roles.preloaded``.
SUPERVISOR = (
    "import importlib\nimport matchmaker.__main__, matchmaker.supervisor\n"
    "from matchmaker import roles\nfrom matchmaker.config import parse_args\n"
    "cfg = parse_args({argv!r})\n"
    "for name in roles.preloaded(cfg.workers, cfg.loop): importlib.import_module(name)"
)
ONE = SUPERVISOR.format(argv=["--workers", "1"])


def test_the_supervisor_of_one_worker_starts_without_the_roles_modules() -> None:
    assert loaded_after(ONE) == []


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_supervisor_of_two_workers_loads_theirs_once_for_both(loop: str) -> None:
    loaded = loaded_after(SUPERVISOR.format(argv=["--workers", "2", "--loop", loop]))
    assert loaded == ["asyncio", "ssl", *(["uvloop"] if loop == "uvloop" else []), roles.WORKER]


def test_the_acceptor_and_the_matchmaker_load_no_event_loop_and_nothing_optional() -> None:
    assert loaded_after(f"{ONE}\nimport matchmaker.acceptor") == ["matchmaker.acceptor"]
    assert loaded_after(f"{ONE}\nimport matchmaker.service") == ["matchmaker.service"]


#: A worker as it starts serving: its module, and its hub made from the flags given.
WORKER = (
    "import asyncio\nfrom matchmaker.config import parse_args\nfrom workers.hub import Hub\n"
    "import workers.process\nHub(0, parse_args({argv!r}), asyncio.new_event_loop(), None)"
)


def test_a_worker_loads_the_websocket_code_only_with_its_port() -> None:
    plain = loaded_after(WORKER.format(argv=[]))
    assert [m for m in plain if m not in LOOP] == ["workers.process"]
    web = loaded_after(WORKER.format(argv=["--ws-port", "0"]))
    # the page's script is named by its hash (``workers.webpage``)
    assert [m for m in web if m not in LOOP] == [*WEB, "workers.process", *OPENSSL_HASHES]


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_choosing_the_loop_does_not_import_it(loop: str) -> None:
    code = f"from matchmaker.config import parse_args\nparse_args(['--loop', '{loop}'])"
    assert loaded_after(code) == []


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
