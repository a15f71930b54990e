#!/usr/bin/env python3
"""Verify a meterwatch evidence bundle. Needs only Python 3.10+ and its standard library.

Usage:  python3 verify_bundle.py [BUNDLE.zip | DIRECTORY] [--root HEX] [--size N]

Without an argument it checks the directory this script is in (the
extracted bundle). It checks, and prints, each of:

1. readings.csv re-hashes (canonical form below) to the evidence digest
   recorded in alert.json and in the alert's ledger entries;
2. every ledger entry in ledger/entries.json is included in the tree head of
   ledger/tree_head.json (RFC 6962 leaf/node hashing, RFC 9162 proof
   verification), is about this alert, and the last one gives its status;
3. with --root (and optionally --size), that the tree head equals a root you
   obtained independently (the central office, another copy of the ledger);
4. the tree head's Ed25519 signature, if the bundle is signed and the
   `cryptography` package happens to be installed (otherwise the README
   shows the equivalent `openssl` command).

Canonical form of readings, for anyone re-implementing the digest: the line
``meterwatch-readings-v1`` followed by one line per reading, readings sorted
by (device, seq, ts_ns), each line the JSON object
``{"device":..,"fields":{name: value, ...},"quality":..,"seq":..,"ts_ns":..}``
with keys sorted, no spaces, ASCII escapes, numbers as Python's shortest
round-trip repr (non-finite values as NaN, Infinity, -Infinity); every line
ends with "\\n"; the digest is the hex SHA-256 of the UTF-8 bytes. In the
CSV an empty cell means the reading lacks that field.

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _string  # a JSON string literal, ASCII
from pathlib import Path
from typing import Any

DIGEST_HEADER = b"meterwatch-readings-v1\n"
CSV_FIXED = ("device", "seq", "ts_ns", "time_utc", "quality")
HEAD_CONTEXT = b"meterwatch tree head v1\n"


# --- the canonical readings digest (also used by meterwatch itself) -------------------


def _number(x: float) -> str:
    """A float as Python's json module writes it (shortest repr; NaN, Infinity)."""
    if math.isnan(x):
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def canonical_line(
    device: str, seq: int, ts_ns: int, quality: str, fields: Mapping[str, float]
) -> bytes:
    """One reading in canonical form: exactly ``json.dumps(record, sort_keys=True,
    separators=(",", ":"), ensure_ascii=True) + "\\n"``, written out by hand for speed."""
    body = ",".join(f"{_string(n)}:{_number(float(fields[n]))}" for n in sorted(fields))
    return (
        f'{{"device":{_string(device)},"fields":{{{body}}},"quality":{_string(quality)},'
        f'"seq":{int(seq)},"ts_ns":{int(ts_ns)}}}\n'
    ).encode("ascii")


RecordTuple = tuple[str, int, int, str, Mapping[str, float]]


def digest_records(records: Iterable[RecordTuple]) -> str:
    """Hex SHA-256 of the canonical form of (device, seq, ts_ns, quality, fields) records."""
    ordered = sorted(records, key=lambda r: (r[0], r[1], r[2]))
    h = hashlib.sha256(DIGEST_HEADER)
    for r in ordered:
        h.update(canonical_line(*r))
    return h.hexdigest()


def records_from_csv(text: str) -> list[RecordTuple]:
    """Parse readings.csv back into records. Raises ValueError on a malformed row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(header[: len(CSV_FIXED)]) != CSV_FIXED:
        raise ValueError(f"readings.csv: the header must start with {','.join(CSV_FIXED)}")
    names = header[len(CSV_FIXED) :]
    out: list[RecordTuple] = []
    for line_no, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"readings.csv line {line_no}: {len(row)} cells, expected {len(header)}"
            )
        try:
            fields = {
                n: float(v) for n, v in zip(names, row[len(CSV_FIXED) :], strict=True) if v != ""
            }
            out.append((row[0], int(row[1]), int(row[2]), row[4], fields))
        except ValueError as exc:
            raise ValueError(f"readings.csv line {line_no}: {exc}") from None
    return out


# --- RFC 6962 / 9162 ------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# --- the checks -----------------------------------------------------------------------


class Bundle:
    """The files of a bundle, from a zip file or an extracted directory."""

    def __init__(self, source: Path) -> None:
        self.files: dict[str, bytes] = {}
        if source.is_dir():
            for p in source.rglob("*"):
                if p.is_file():
                    self.files[p.relative_to(source).as_posix()] = p.read_bytes()
        else:
            with zipfile.ZipFile(source) as z:
                for name in z.namelist():
                    self.files[name] = z.read(name)
            # The zip holds one top-level directory (alert-<id>/): look inside it.
            tops = {name.split("/", 1)[0] for name in self.files}
            if "alert.json" not in self.files and len(tops) == 1:
                top = tops.pop() + "/"
                self.files = {n[len(top) :]: d for n, d in self.files.items() if n.startswith(top)}

    def text(self, name: str) -> str:
        if name not in self.files:
            raise ValueError(f"the bundle has no {name}")
        return self.files[name].decode("utf-8")

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))


def check(bundle: Bundle, *, root: str | None = None, size: int | None = None) -> list[str]:
    """Run every check; returns the list of failures (empty = verified). Prints progress."""
    failures: list[str] = []

    def result(ok: bool, what: str) -> None:
        print(("OK    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    alert = bundle.json("alert.json")
    head = bundle.json("ledger/tree_head.json")
    entries = bundle.json("ledger/entries.json")
    alert_id = alert["id"]

    digest = digest_records(records_from_csv(bundle.text("readings.csv")))
    result(
        digest == alert["evidence_digest"],
        f"readings.csv hashes to {digest[:16]}..., the alert's evidence digest "
        f"{alert['evidence_digest'][:16]}...",
    )

    head_root = bytes.fromhex(head["root"])
    cited = False
    last_status = None
    for item in entries:
        raw = item["entry"].encode("utf-8")
        record = json.loads(raw)
        index = item["index"]
        proof = [bytes.fromhex(p) for p in item["proof"]]
        computed = root_from_inclusion(leaf_hash(raw), index, head["size"], proof)
        result(
            computed == head_root and record.get("index") == index,
            f"ledger entry {index} ({record.get('type')}) is in the tree of size "
            f"{head['size']} with root {head['root'][:16]}...",
        )
        result(
            record.get("alert_id") == alert_id,
            f"ledger entry {index} is about alert {alert_id}",
        )
        if record.get("readings_digest") == digest:
            cited = True
        last_status = record.get("status", last_status)
    result(cited, "a ledger entry of the alert records this readings digest")
    result(
        last_status == alert["status"],
        f"the alert's status {alert['status']!r} is the one its last ledger entry records",
    )
    history_indices = sorted(h["ledger_index"] for h in alert.get("history", []))
    result(
        history_indices == sorted(item["index"] for item in entries),
        "every history entry of the alert has its ledger entry in the bundle",
    )
    if root is not None:
        result(
            head["root"] == root.lower() and (size is None or head["size"] == size),
            f"the tree head matches the independently obtained root {root[:16]}...",
        )
    if head.get("signature"):
        message = HEAD_CONTEXT + f"{head['size']}\n{head['root']}\n{head['ts_ns']}\n".encode()
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            print("SKIP  tree head signature: verify it with openssl as README.txt shows")
        else:
            try:
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(head["public_key"])).verify(
                    bytes.fromhex(head["signature"]), message
                )
                good = True
            except Exception:  # InvalidSignature, or a malformed key
                good = False
            result(good, f"the tree head is signed by Ed25519 key {head['public_key'][:16]}...")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a meterwatch evidence bundle.")
    parser.add_argument("bundle", nargs="?", help="bundle .zip or extracted directory")
    parser.add_argument("--root", help="a tree root (hex) obtained independently")
    parser.add_argument("--size", type=int, help="the tree size of --root")
    args = parser.parse_args(argv)
    source = Path(args.bundle) if args.bundle else Path(__file__).resolve().parent
    try:
        failures = check(Bundle(source), root=args.root, size=args.size)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        print(f"FAIL  cannot read the bundle: {exc!r}")
        return 1
    print("VERIFIED" if not failures else f"NOT VERIFIED: {len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
