"""The README states facts the code can check: its field table, its commands, CI's command."""

from __future__ import annotations

import re
from pathlib import Path

from drivers.fields import markdown_table
from gateway.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_field_table_matches_the_canonical_fields() -> None:
    block = README.split("<!-- fields:begin -->")[1].split("<!-- fields:end -->")[0]
    assert block.strip() == markdown_table()


def test_every_cli_command_is_documented() -> None:
    for name in COMMANDS:
        assert f"`meterwatch {name}" in README, name


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\b", ci, re.MULTILINE)


def test_readme_evaluation_table_is_the_one_in_docs() -> None:
    docs = (ROOT / "docs" / "eval.md").read_text(encoding="utf-8")
    table = docs[docs.index("| case | target |") : docs.index("All cases:")].strip()
    assert table in README
