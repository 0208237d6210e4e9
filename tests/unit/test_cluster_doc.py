"""docs/CLUSTER.md names every Redis key the scripts use, and real methods."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from matchmaker import cluster, shared

DOC = (Path(__file__).resolve().parents[2] / "docs" / "CLUSTER.md").read_text()


def keys_in_scripts() -> set[str]:
    text = shared.source("beat") + "".join(shared.SCRIPTS.values())
    return {"mm:" + name for name in re.findall(r"P\.\.'([a-z]+:?)'", text)}


def test_every_key_the_scripts_touch_is_in_the_key_table() -> None:
    keys = keys_in_scripts()
    assert {"mm:owner", "mm:session", "mm:inbox:", "mm:alive", "mm:clock"} <= keys
    for key in keys:
        documented = f"`{key}<node>`" if key.endswith(":") else f"`{key}`"
        assert f"| {documented} |" in DOC, key


def test_every_script_has_a_row() -> None:
    for name in shared.SCRIPTS:
        assert f"| {name.upper()} |" in DOC, name


def test_the_methods_and_fields_it_names_exist() -> None:
    fields = set(
        re.findall(r"self\.([a-z_]+)(?::[^=\n]+)? =", inspect.getsource(cluster.ClusterMatchmaker))
    )
    named = set(re.findall(r"ClusterMatchmaker\.([a-z_]+)", DOC))
    assert named
    for name in named:
        assert hasattr(cluster.ClusterMatchmaker, name) or name in fields, name
