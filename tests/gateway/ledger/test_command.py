"""`meterwatch ledger verify|head|proof` on a real alert database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from anomaly.finding import Finding
from gateway.alerts import AlertAction, AlertStore
from gateway.cli import main
from gateway.ledger import TreeHead, leaf_hash, verify_consistency, verify_inclusion

T0 = 1_764_300_000_000_000_000


def populate(path: Path) -> int:
    store = AlertStore(path)
    first = 0
    for i in range(4):
        c = store.ingest(
            Finding("integrity.counter_rollback", (f"m{i}",), 2.0, 1.0, T0, T0 + i, "rollback"),
            site="s1",
            evidence_digest="ab" * 32,
        )
        assert c is not None
        first = first or c.alert.id
    store.act(first, AlertAction.ACKNOWLEDGE, who="insp")
    store.close()
    return first


def test_verify_ok_then_tampered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "alerts.sqlite"
    populate(db)
    assert main(["ledger", "verify", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 5 entries, root ")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE ledger_entries SET entry = replace(entry, 'm2', 'm9') WHERE idx = 2")
    conn.close()
    assert main(["ledger", "verify", "--db", str(db)]) == 1
    assert "FAILED: first bad entry 2:" in capsys.readouterr().out


def test_verify_against_a_root_held_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "alerts.sqlite"
    populate(db)
    main(["ledger", "head", "--db", str(db)])
    head = json.loads(capsys.readouterr().out)
    assert main(["ledger", "verify", "--db", str(db), "--root", head["root"]]) == 0
    capsys.readouterr()
    assert main(["ledger", "verify", "--db", str(db), "--root", "00" * 32, "--size", "3"]) == 1
    assert "trusted tree head of size 3" in capsys.readouterr().out


def test_head_with_config_key_and_proofs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = populate(data_dir / "alerts.sqlite")
    key = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    config = tmp_path / "mw.toml"
    config.write_text(
        f'[storage]\ndata_dir = "data"\n[alerts]\nledger_signing_key = "{key.hex()}"\n'
    )
    assert main(["ledger", "head", "-c", str(config), "--checkpoint"]) == 0
    head = json.loads(capsys.readouterr().out)
    assert TreeHead(**head).signature_ok() is True and head["size"] == 5
    assert main(["ledger", "verify", "-c", str(config)]) == 0
    assert "1 tree head(s) checked" in capsys.readouterr().out

    assert main(["ledger", "proof", "-c", str(config), str(first)]) == 0
    proof = json.loads(capsys.readouterr().out)
    root = bytes.fromhex(proof["head"]["root"])
    assert [e["kind"] for e in proof["entries"]] == ["created", "acknowledged"]
    for e in proof["entries"]:
        leaf = leaf_hash(e["entry"].encode())
        path = [bytes.fromhex(p) for p in e["proof"]]
        assert verify_inclusion(leaf, e["index"], proof["head"]["size"], path, root)

    assert main(["ledger", "proof", "-c", str(config), "--consistency", "2"]) == 0
    cons = json.loads(capsys.readouterr().out)
    assert verify_consistency(
        2,
        cons["head"]["size"],
        [bytes.fromhex(p) for p in cons["proof"]],
        bytes.fromhex(cons["old_root"]),
        bytes.fromhex(cons["head"]["root"]),
    )


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "verify", "--db", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such ledger database" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite").exists()
    db = tmp_path / "alerts.sqlite"
    populate(db)
    assert main(["ledger", "proof", "--db", str(db), "999"]) == 2
    assert "alert 999 does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[alerts]\nledger_signing_key = 'zz'\n")
    assert main(["ledger", "head", "-c", str(bad)]) == 2
    assert "ledger_signing_key" in capsys.readouterr().err
