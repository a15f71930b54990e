"""The SQLite ledger: proofs, restarts, signed heads, tampering (detected, first bad named)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gateway.ledger import (
    Ledger,
    LedgerError,
    TreeHead,
    canonical_json,
    leaf_hash,
    load_signing_key,
    merkle,
    verify_consistency,
    verify_inclusion,
)

N = 12


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    led = Ledger.open(path)
    for i in range(N):
        led.append({"type": "test", "n": i, "note": f"entry {i} é", "x": i / 3})
    led.close()
    return path


def raw_conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def verify(path: Path) -> tuple[bool, int | None, str | None]:
    led = Ledger.open(path)
    try:
        r = led.verify()
    finally:
        led.close()
    return r.ok, r.first_bad, r.problem


def test_entries_carry_index_and_prev_root(ledger_path: Path) -> None:
    led = Ledger.open(ledger_path)
    assert led.size == N
    leaves = [bytes.fromhex(e.leaf_hash) for e in led.entries()]
    assert led.root() == merkle.root_of(leaves)
    for i in range(N):
        rec = led.entry(i).record
        assert rec["index"] == i and rec["prev_root"] == merkle.root_of(leaves[:i]).hex()
        assert led.entry(i).raw == canonical_json(rec)
    report = led.verify()
    assert report.ok and report.size == N and report.root == led.root().hex()
    led.close()


def test_proofs_from_the_store_verify(ledger_path: Path) -> None:
    led = Ledger.open(ledger_path)
    for size in range(1, N + 1):
        root = led.root(size)
        for i in range(size):
            proof = led.inclusion_proof(i, size)
            assert verify_inclusion(leaf_hash(led.entry(i).raw), i, size, proof, root)
        for old in range(0, size + 1):
            assert verify_consistency(
                old, size, led.consistency_proof(old, size), led.root(old), root
            )
    with pytest.raises(LedgerError, match="no entry 12 in a tree of size 12"):
        led.inclusion_proof(N)
    with pytest.raises(LedgerError, match="no ledger entry 99"):
        led.entry(99)
    led.close()


def test_restart_keeps_the_tree_and_appends_continue(ledger_path: Path) -> None:
    led = Ledger.open(ledger_path)
    root = led.root()
    led.close()
    led = Ledger.open(ledger_path)
    assert led.root() == root
    assert led.append({"type": "more"}) == N
    assert verify_consistency(N, N + 1, led.consistency_proof(N), root, led.root())
    assert led.verify().ok
    led.close()


def test_records_that_would_break_the_chain_are_refused(tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match="must not set 'index'"):
        led.append({"index": 5})
    with pytest.raises(LedgerError, match=r"field a\.b is nan"):
        led.append({"a": {"b": float("nan")}})
    assert led.size == 0
    led.close()
    with pytest.raises(LedgerError, match="no such ledger database"):
        Ledger.open(tmp_path / "missing.sqlite", must_exist=True)


@pytest.mark.parametrize("k", [0, 5, N - 1])
def test_flipping_any_bit_of_an_entry_names_it(ledger_path: Path, k: int) -> None:
    conn = raw_conn(ledger_path)
    (original,) = conn.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (k,)).fetchone()
    for bit in range(0, len(original) * 8, 5):
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (bytes(flipped), k))
        ok, first_bad, problem = verify(ledger_path)
        assert not ok and first_bad == k, (bit, problem)
    conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (original, k))
    conn.close()
    assert verify(ledger_path)[0]


def test_an_altered_entry_with_its_leaf_hash_recomputed_is_still_named(ledger_path: Path) -> None:
    conn = raw_conn(ledger_path)
    (raw,) = conn.execute("SELECT entry FROM ledger_entries WHERE idx = 4").fetchone()
    forged = raw.replace(b'"n":4', b'"n":7')
    conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = 4", (forged,))
    conn.execute(
        "UPDATE ledger_nodes SET hash = ? WHERE level = 0 AND pos = 4", (leaf_hash(forged),)
    )
    conn.close()
    ok, first_bad, problem = verify(ledger_path)
    assert not ok and first_bad == 4 and "prev_root" in (problem or "")


@pytest.mark.parametrize("k", [0, 6])
def test_dropping_an_entry_names_it(ledger_path: Path, k: int) -> None:
    conn = raw_conn(ledger_path)
    conn.execute("DELETE FROM ledger_entries WHERE idx = ?", (k,))
    conn.close()
    ok, first_bad, problem = verify(ledger_path)
    assert not ok and first_bad == k and "missing" in (problem or "")


def test_dropping_an_entry_and_renumbering_is_detected(ledger_path: Path) -> None:
    conn = raw_conn(ledger_path)
    conn.execute("DELETE FROM ledger_entries WHERE idx = 3")
    conn.execute("UPDATE ledger_entries SET idx = idx - 1 WHERE idx > 3")
    conn.close()
    ok, first_bad, problem = verify(ledger_path)
    assert not ok and first_bad == 3 and "holds the record of entry 4" in (problem or "")


def test_dropping_the_last_entry_is_detected(ledger_path: Path) -> None:
    conn = raw_conn(ledger_path)
    conn.execute("DELETE FROM ledger_entries WHERE idx = ?", (N - 1,))
    conn.close()
    ok, first_bad, _ = verify(ledger_path)
    assert not ok and first_bad == N - 1


@pytest.mark.parametrize(("i", "j"), [(2, 7), (0, 1), (N - 2, N - 1)])
def test_swapping_two_entries_names_the_first(ledger_path: Path, i: int, j: int) -> None:
    conn = raw_conn(ledger_path)
    (a,) = conn.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (i,)).fetchone()
    (b,) = conn.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (j,)).fetchone()
    conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (b, i))
    conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (a, j))
    conn.close()
    ok, first_bad, problem = verify(ledger_path)
    assert not ok and first_bad == i and f"record of entry {j}" in (problem or "")


def test_a_tampered_stored_node_is_detected(ledger_path: Path) -> None:
    conn = raw_conn(ledger_path)
    conn.execute("UPDATE ledger_nodes SET hash = ? WHERE level = 2 AND pos = 1", (bytes(32),))
    conn.close()
    ok, first_bad, problem = verify(ledger_path)
    assert not ok and first_bad == 4 and "level 2" in (problem or "")


def _key_hex() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()


def test_signed_heads_and_a_consistent_rewrite_caught_by_a_trusted_head(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = Ledger.open(path, signing_key=load_signing_key(_key_hex()))
    for i in range(5):
        led.append({"n": i})
    head = led.checkpoint()
    assert head.signature_ok() is True and head.size == 5
    forged = TreeHead(head.size, head.root, head.ts_ns + 1, head.signature, head.public_key)
    assert forged.signature_ok() is False
    assert led.verify().heads_checked == 1
    led.close()

    # Rewrite everything from entry 2 on, consistently (as someone with the file could).
    clone = tmp_path / "clone.sqlite"
    c = Ledger.open(clone)
    for i in range(5):
        c.append({"n": i if i < 2 else i + 100})
    c.close()
    src, dst = raw_conn(clone), raw_conn(path)
    dst.execute("DELETE FROM ledger_entries")
    dst.execute("DELETE FROM ledger_nodes")
    dst.executemany(
        "INSERT INTO ledger_entries VALUES (?, ?)", src.execute("SELECT * FROM ledger_entries")
    )
    dst.executemany(
        "INSERT INTO ledger_nodes VALUES (?, ?, ?)", src.execute("SELECT * FROM ledger_nodes")
    )
    src.close()
    dst.close()
    led = Ledger.open(path)
    report = led.verify()  # the stored (signed) head no longer matches
    assert not report.ok and "size 5 does not match" in (report.problem or "")
    dst = raw_conn(path)
    dst.execute("DELETE FROM ledger_heads")  # ...so the forger deletes it too
    dst.close()
    assert led.verify().ok  # undetectable from the file alone
    report = led.verify(trusted=head)  # but not against the head the central office holds
    assert not report.ok and "trusted tree head" in (report.problem or "")
    led.close()


def test_a_bad_signing_key_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match=r"alerts\.ledger_signing_key: not hexadecimal"):
        load_signing_key("zz")
    with pytest.raises(LedgerError, match="32 bytes"):
        load_signing_key("ab" * 16)


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    a, b = Ledger.open(path), Ledger.open(path)
    assert a.append({"by": "a"}) == 0
    assert b.append({"by": "b"}) == 1  # b notices a's entry instead of overwriting index 0
    assert a.append({"by": "a"}) == 2
    assert a.verify().ok and b.verify().ok and a.root() == b.root()
    a.close()
    b.close()


async def test_checkpoints_only_when_grown(tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "l.sqlite")
    assert led.checkpoint_if_grown() is None  # nothing to sign yet
    led.append({"n": 1})
    head = led.checkpoint_if_grown()
    assert head is not None and head.size == 1
    assert led.checkpoint_if_grown() is None
    led.append({"n": 2})
    task = asyncio.create_task(led.run_checkpoints(interval_s=0.01))
    for _ in range(500):
        if [h.size for h in led.heads()] == [1, 2]:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [h.size for h in led.heads()] == [1, 2]
    assert led.verify().heads_checked == 2
    led.close()
