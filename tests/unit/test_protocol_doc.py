"""docs/PROTOCOL.md and ``--help`` against the code: one source for verbs, codes and limits.

Like gunicorn's lint job that fails on stale generated docs: a verb, an error
code or a reply word added to the code but not to the document fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from matchmaker.config import DEFAULT_SENDQ, DEFAULT_WORKER_TIMEOUT, build_parser
from matchmaker.table import DEFAULT_MAX_CLIENTS
from wire.codec import DEFAULT_MAX_LINE
from wire.commands import VERBS
from wire.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")

REPLY_WORDS = [
    "WELCOME",
    "CLIENTS",
    "CONNECTED",
    "MSG",
    "ENDED",
    "BYE",
    "OUTAGE",
    "PONG",
    "HELP",
    "ERROR",
]


def table_rows(heading):
    """The first cells of the markdown table under ``heading``."""
    section = DOC.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append(line.split("`")[1])
    return rows


def forms(syntax):
    """``GET [FREE]`` -> ``GET`` and ``GET FREE``: each way the verb may be written."""
    match = re.fullmatch(r"(.*?) \[(.+)\]", syntax)
    if match is None:
        return [syntax]
    return [match[1], f"{match[1]} {match[2]}"]


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_every_error_code_is_documented(code):
    assert re.search(rf"`ERROR {code}\b", DOC), f"`ERROR {code}` missing"
    assert any(row.split()[:2] == ["ERROR", code] for row in table_rows("### Error codes"))


def test_error_code_table_has_no_unknown_codes():
    documented = {row.split()[1] for row in table_rows("### Error codes")}
    assert documented == {c.value for c in ErrorCode}


@pytest.mark.parametrize("syntax", [v.syntax for v in VERBS.values()])
def test_every_verb_is_documented(syntax):
    commands = table_rows("## Client to server")
    for form in forms(syntax):
        assert form in commands or f"`{syntax}`" in DOC, f"`{form}` missing"


def test_forms_expands_optional_words():
    assert forms("GET [FREE]") == ["GET", "GET FREE"]
    assert forms("CONNECT <id>") == ["CONNECT <id>"]


@pytest.mark.parametrize("word", REPLY_WORDS)
def test_every_reply_word_is_documented(word):
    rows = table_rows("## Server to client")
    assert any(row.split()[0] == word for row in rows), f"`{word} ...` missing"


def test_documented_limits_match_the_code():
    text = " ".join(DOC.split())
    assert f"`--max-line` bytes (default {DEFAULT_MAX_LINE})" in text
    assert f"`--max-clients` clients (default {DEFAULT_MAX_CLIENTS})" in text
    assert DEFAULT_SENDQ == 1 << 20
    assert "`--sendq` bytes (default 1 MiB)" in text


# ---- python -m matchmaker --help ----------------------------------------------------


@pytest.fixture(scope="module")
def help_text():
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "matchmaker", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def flag_help(help_text, flag):
    """The help of one option, from its line to the next option, blanks collapsed."""
    match = re.search(rf"^  {flag}\b(.*?)(?=^  -)", help_text + "\n  -", re.S | re.M)
    assert match is not None, f"{flag} missing from --help"
    return " ".join(match[1].split())


@pytest.mark.parametrize(
    ("flag", "default"),
    [
        ("--max-line", str(DEFAULT_MAX_LINE)),
        ("--max-clients", str(DEFAULT_MAX_CLIENTS)),
        ("--sendq", str(DEFAULT_SENDQ)),
        ("--port", "5000"),
        ("--host", "0.0.0.0"),
        ("--workers", "the CPU count"),
        ("--worker-timeout", str(DEFAULT_WORKER_TIMEOUT)),
    ],
)
def test_help_names_each_flag_and_its_default(help_text, flag, default):
    assert f"(default: {default})" in flag_help(help_text, flag)


def test_help_points_at_the_protocol_document(help_text):
    assert "docs/PROTOCOL.md" in " ".join(help_text.split())


def test_help_states_each_default_once(help_text):
    """``--node`` said ``(default: HOSTNAME:PORT) ... (default: None)``."""
    flags = re.findall(r"^  (--[a-z-]+)", help_text, re.M)
    assert len(flags) > 20
    for flag in flags:
        assert flag_help(help_text, flag).count("default") == 1, flag


def readme_defaults():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:3] for line in readme.splitlines() if line.startswith("| `--")]
    return {flag.strip().strip("`"): default.strip().strip("`") for flag, default in rows}


def same_default(a, b):
    a, b = a.lower().removeprefix("the "), b.lower().removeprefix("the ")
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def test_help_and_the_readme_name_the_same_defaults(help_text):
    """``--help`` said ``--legacy-port ... (default: None)`` where the README says off."""
    for flag, default in readme_defaults().items():
        stated = re.search(r"\(default: ([^)]*)\)", flag_help(help_text, flag))
        assert stated is not None, flag
        assert same_default(stated[1], default), (flag, stated[1], default)


def test_readme_flag_table_has_every_flag():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `--")]
    documented = {row.split("`")[1] for row in rows}
    # every option line of --help: "  --flag ..." (and "  -h, --help", left out)
    flags = set(re.findall(r"^  (--[a-z-]+)", build_parser().format_help(), re.M))
    assert flags == documented
    timeout_row = next(row for row in rows if row.startswith("| `--worker-timeout`"))
    assert f"| `{DEFAULT_WORKER_TIMEOUT}` |" in timeout_row


def test_every_promise_about_faults_names_a_test_that_exists():
    """Each row of "When a server process dies or stalls" cites tests; each must exist."""
    section = DOC.split("## When a server process dies or stalls", 1)[1].split("\n## ", 1)[0]
    cited = re.findall(r"`(test_\w+\.py)::(test_\w+)`", section)
    assert len(cited) >= 10, cited
    for module, name in cited:
        source = (ROOT / "tests" / "integration" / module).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{module}::{name} does not exist"
    rows = [row for row in section.splitlines() if row.startswith("| ") and "---" not in row]
    assert all("`test_" in row for row in rows[1:]), "a promise without a test"
