"""`meterwatch ledger verify|head|proof`: check and prove the evidence ledger from the shell.

The ledger lives in the alert database, ``<storage.data_dir>/alerts.sqlite``
(``-c CONFIG``) or any file given with ``--db``. `verify` recomputes the whole
tree and names the first bad entry (exit 1); `head` prints the tree head
(signed with ``alerts.ledger_signing_key`` when the config has one);
`proof ALERT_ID` prints the alert's entries with inclusion proofs, and
`proof --consistency OLD_SIZE` the proof that the ledger only grew since a
head of that size. Output of `head` and `proof` is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config
from gateway.ledger import Ledger, LedgerError, TreeHead, load_signing_key

HELP = "verify the evidence ledger, print its tree head, or print proofs"

DEFAULT_CONFIG = "/etc/meterwatch/meterwatch.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--db", help="the alert/ledger SQLite file")
        src.add_argument("-c", "--config", help=f"config file (default {DEFAULT_CONFIG})")

    verify = sub.add_parser("verify", help="recompute the ledger; name the first bad entry")
    common(verify)
    verify.add_argument("--root", help="a tree root (hex) held elsewhere, to check against")
    verify.add_argument("--size", type=int, help="the tree size of --root (default: current)")

    head = sub.add_parser("head", help="print the current tree head as JSON")
    common(head)
    head.add_argument(
        "--checkpoint", action="store_true", help="also record it in the ledger's head table"
    )

    proof = sub.add_parser("proof", help="inclusion proofs of an alert, or a consistency proof")
    common(proof)
    what = proof.add_mutually_exclusive_group(required=True)
    what.add_argument("alert_id", nargs="?", type=int, help="alert id")
    what.add_argument("--consistency", type=int, metavar="OLD_SIZE", help="from this tree size")


def _source(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The database path and signing key (hex) from --db or the config."""
    if args.db:
        return Path(args.db), None
    settings = load_config(args.config or DEFAULT_CONFIG)
    key = settings.alerts.ledger_signing_key
    return settings.storage.data_dir / "alerts.sqlite", key.get_secret_value() if key else None


def main(args: argparse.Namespace) -> int:
    try:
        path, key_hex = _source(args)
        key = load_signing_key(key_hex) if key_hex else None
        ledger = Ledger.open(path, signing_key=key, must_exist=True)
    except (ConfigError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        command = args.ledger_command
        if command == "verify":
            trusted = None
            if args.root:
                size = args.size if args.size is not None else ledger.size
                trusted = TreeHead(size, args.root.lower(), 0)
            report = ledger.verify(trusted=trusted)
            if report.ok:
                print(
                    f"OK: {report.size} entries, root {report.root}"
                    f" ({report.heads_checked} tree head(s) checked)"
                )
                return 0
            print(f"FAILED: first bad entry {report.first_bad}: {report.problem}")
            return 1
        if command == "head":
            head = ledger.checkpoint() if args.checkpoint else ledger.head()
            print(json.dumps(head.to_dict(), indent=2))
            return 0
        if args.consistency is not None:
            new_size = ledger.size
            proof = ledger.consistency_proof(args.consistency, new_size)
            out = {
                "old_size": args.consistency,
                "old_root": ledger.root(args.consistency).hex(),
                "head": ledger.head().to_dict(),
                "proof": [p.hex() for p in proof],
            }
            print(json.dumps(out, indent=2))
            return 0
        return _alert_proof(ledger, path, args.alert_id)
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()


def _alert_proof(ledger: Ledger, path: Path, alert_id: int) -> int:
    from gateway.alerts import AlertNotFoundError, AlertStore

    store = AlertStore(path)
    try:
        history = store.history(alert_id)
    except AlertNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    head = ledger.head()
    entries = [
        {
            "index": h.ledger_index,
            "kind": h.kind.value,
            "entry": ledger.entry(h.ledger_index).raw.decode("utf-8"),
            "leaf_hash": ledger.entry(h.ledger_index).leaf_hash,
            "proof": [p.hex() for p in ledger.inclusion_proof(h.ledger_index, head.size)],
        }
        for h in history
        if h.ledger_index < head.size
    ]
    print(json.dumps({"alert_id": alert_id, "head": head.to_dict(), "entries": entries}, indent=2))
    return 0
