#!/usr/bin/env python3
"""Verify a meterwatch evidence bundle. Needs only Python 3.10+ and its standard library.

Usage:  python3 verify_bundle.py [BUNDLE.zip | DIRECTORY] [--root HEX] [--size N]
                                 [--public-key HEX]

Without an argument it checks the directory this script is in (the
extracted bundle). It checks, and prints, each of:

1. readings.csv re-hashes (canonical form below) to the evidence digest
   recorded in alert.json and in the alert's ledger entries;
2. every ledger entry in ledger/entries.json is included in the tree head of
   ledger/tree_head.json (RFC 6962 leaf/node hashing, RFC 9162 proof
   verification), is about this alert, and the last one gives its status;
3. with --root (and optionally --size), that the tree head equals a root you
   obtained independently (the central office, another copy of the ledger);
4. the tree head's Ed25519 signature, if the ledger signs its heads (RFC 8032
   verification below; the README also shows the equivalent `openssl`
   command), and with --public-key that the signer is the registered key.

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


# --- Ed25519 signature verification (RFC 8032 section 5.1.7), for the tree head ----------
# Verification only, on public data: no secret is ever handled here, so a plain,
# readable big-integer implementation is fine (a few milliseconds per signature).

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    return _P - x if (x & 1) != sign else x


_BY = 4 * pow(5, _P - 2, _P) % _P
_BX = _recover_x(_BY, 0) or 0
_BASE: Point = (_BX, _BY, 1, _BX * _BY % _P)


def _add(p: Point, q: Point) -> Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * 2 * _D * t2 % _P
    d = z1 * 2 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: Point) -> Point:
    result: Point = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _decompress(data: bytes) -> Point | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decompress(public_key)
    r = _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    left = _multiply(s, _BASE)
    right = _add(r, _multiply(h % _L, a))
    # Compare projectively: x1/z1 == x2/z2 and y1/z1 == y2/z2.
    return (left[0] * right[2] - right[0] * left[2]) % _P == 0 and (
        left[1] * right[2] - right[1] * left[2]
    ) % _P == 0


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


def check(
    bundle: Bundle,
    *,
    root: str | None = None,
    size: int | None = None,
    public_key: str | None = None,
) -> list[str]:
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
    if public_key is not None:
        result(
            (head.get("public_key") or "") == public_key.lower(),
            f"the tree head is signed by the registered key {public_key[:16]}...",
        )
    if head.get("signature"):
        message = HEAD_CONTEXT + f"{head['size']}\n{head['root']}\n{head['ts_ns']}\n".encode()
        try:
            good = ed25519_verify(
                bytes.fromhex(head["public_key"]), message, bytes.fromhex(head["signature"])
            )
        except (ValueError, TypeError):
            good = False
        result(good, f"the tree head's Ed25519 signature by key {head['public_key'][:16]}...")
    elif public_key is not None:
        result(False, "the tree head is signed")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a meterwatch evidence bundle.")
    parser.add_argument("bundle", nargs="?", help="bundle .zip or extracted directory")
    parser.add_argument("--root", help="a tree root (hex) obtained independently")
    parser.add_argument("--size", type=int, help="the tree size of --root")
    parser.add_argument("--public-key", help="the ledger's registered Ed25519 public key (hex)")
    args = parser.parse_args(argv)
    source = Path(args.bundle) if args.bundle else Path(__file__).resolve().parent
    try:
        failures = check(Bundle(source), root=args.root, size=args.size, public_key=args.public_key)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        print(f"FAIL  cannot read the bundle: {exc!r}")
        return 1
    print("VERIFIED" if not failures else f"NOT VERIFIED: {len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
