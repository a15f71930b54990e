"""`meterwatch api-key new`: the printed key hashes to the printed digest, and the
snippet is a config the loader accepts with that key's name, role and sites."""

from __future__ import annotations

import re
import tomllib

import pytest

from gateway.api.auth import KeyRing, hash_key
from gateway.cli import main
from gateway.config import Role, parse_config


def test_new_key_snippet_is_valid_config_and_matches_the_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["api-key", "new", "--role", "inspector", "--sites", "north,south", "--name", "ann"])
        == 0
    )
    out = capsys.readouterr().out
    key = re.search(r"^  (mw_\S+)$", out, re.M)
    assert key is not None
    snippet = out[out.index("[[api.keys]]") :]
    settings = parse_config({"api": tomllib.loads(snippet)["api"]})
    (entry,) = settings.api.keys
    assert entry.name == "ann" and entry.role is Role.INSPECTOR
    assert entry.sites == ["north", "south"]
    assert entry.sha256 == hash_key(key.group(1))
    who = KeyRing(settings.api.keys).authenticate(key.group(1))
    assert who is not None and who.name == "ann"


def test_each_key_is_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    keys = set()
    for _ in range(3):
        assert main(["api-key", "new", "--role", "admin", "--name", "ops"]) == 0
        found = re.search(r"^  (mw_\S+)$", capsys.readouterr().out, re.M)
        assert found is not None and len(found.group(1)) >= 40
        keys.add(found.group(1))
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role", "admin", "--name", "bad name"], "--name"),
        (["--role", "admin", "--name", "ok", "--sites", "north,no such"], "--sites"),
        (["--role", "admin", "--name", "ok", "--sites", ","], "--sites"),
    ],
)
def test_bad_input_is_refused_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api-key", "new", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "mw_" not in captured.out


def test_unknown_role_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["api-key", "new", "--role", "janitor", "--name", "x"])
    assert exc.value.code == 2
