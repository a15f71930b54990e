"""The evidence ledger: an append-only RFC 6962 Merkle tree of canonical JSON entries in SQLite.

Every entry is a JSON object serialised canonically (`canonical_json`) that
also carries its own position (``index``) and the root of the tree before it
(``prev_root``), so the entries form a hash chain as well as a Merkle tree.
Tables (in the same SQLite file as the alerts, so that an alert change and
its ledger entry commit in one transaction):

- ``ledger_entries(idx, entry)``: the entries, in order;
- ``ledger_nodes(level, pos, hash)``: the hash of every perfect subtree
  (level 0 = leaf hashes), so proofs cost O(log² n) lookups;
- ``ledger_heads(size, root, ts_ns, signature, public_key)``: tree heads
  recorded by `checkpoint()`, Ed25519-signed when a key is configured.

`verify()` trusts none of the stored hashes: it recomputes the tree from the
entries alone and reports the first bad entry. It detects a changed entry
(its leaf hash, or the next entry's ``prev_root``), a removed entry (a gap
in ``idx`` or an ``index`` that does not match the position), reordered
entries (``index`` mismatch), a stored node or tree head that disagrees with
the entries, and a bad head signature. A consistent rewrite of the whole
file from some entry on is only detectable against a tree head kept
elsewhere (a central office holding signed heads, `verify(trusted=...)`).

Failure modes handled: a missing or unreadable database file (`LedgerError`
with the path), a non-canonical or unparsable entry, non-finite numbers in
a record (refused with the offending key), a rolled-back transaction (the
in-memory frontier is reloaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from drivers.reading import now_ns
from gateway.ledger import merkle

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_entries (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_nodes (
    level INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_heads (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    ts_ns INTEGER NOT NULL,
    signature BLOB,
    public_key BLOB
);
"""

HEAD_CONTEXT = b"meterwatch tree head v1\n"

log = logging.getLogger(__name__)


class LedgerError(Exception):
    """The ledger cannot be opened, read or appended to; `path` names the file if known."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def canonical_json(record: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace; non-finite numbers are refused."""
    _check_finite(record, "")
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check_finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise LedgerError(f"ledger record field {path or '(root)'} is {value}; not allowed")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{path}[{i}]")


def load_signing_key(hex_key: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from 64 hex digits (`alerts.ledger_signing_key`)."""
    try:
        raw = bytes.fromhex(hex_key.strip())
    except ValueError:
        raise LedgerError("alerts.ledger_signing_key: not hexadecimal") from None
    if len(raw) != 32:
        raise LedgerError(
            f"alerts.ledger_signing_key: an Ed25519 key is 32 bytes (64 hex digits), "
            f"got {len(raw)} bytes"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def head_message(size: int, root: bytes, ts_ns: int) -> bytes:
    """The exact bytes an Ed25519 tree-head signature covers."""
    return HEAD_CONTEXT + f"{size}\n{root.hex()}\n{ts_ns}\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The tree's size and root at a moment, optionally signed (hex strings)."""

    size: int
    root: str
    ts_ns: int
    signature: str | None = None
    public_key: str | None = None

    def message(self) -> bytes:
        return head_message(self.size, bytes.fromhex(self.root), self.ts_ns)

    def signature_ok(self) -> bool | None:
        """True/False when signed, None when unsigned."""
        if self.signature is None or self.public_key is None:
            return None
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
            key.verify(bytes.fromhex(self.signature), self.message())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root,
            "ts_ns": self.ts_ns,
            "signature": self.signature,
            "public_key": self.public_key,
        }


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    index: int
    raw: bytes  # the canonical JSON bytes the leaf hash covers
    leaf_hash: str

    @property
    def record(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.raw)
        return value


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of `Ledger.verify()`. `first_bad` is the first entry found wrong."""

    ok: bool
    size: int
    root: str
    first_bad: int | None = None
    problem: str | None = None
    heads_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "first_bad": self.first_bad,
            "problem": self.problem,
            "heads_checked": self.heads_checked,
        }


class Ledger:
    """An append-only Merkle-tree ledger on a SQLite connection.

    Open it standalone with `Ledger.open(path)`; `AlertStore` builds one on
    its own connection (``store.ledger``) so an alert change and its entry
    commit together. All methods are synchronous, thread-safe (one lock
    shared with the owner of the connection) and fast (O(log² n) lookups),
    except `verify()`, which reads every entry: run it in a thread from
    asyncio (`averify`).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        lock: threading.RLock | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], int] = now_ns,
        path: str | None = None,
    ) -> None:
        self._conn = conn
        self._lock = lock or threading.RLock()
        self._key = signing_key
        self._clock = clock
        self.path = path
        self._frontier = merkle.Frontier()
        with self._lock:
            conn.executescript(SCHEMA)
            self._reload()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        signing_key: Ed25519PrivateKey | None = None,
        must_exist: bool = False,
    ) -> Ledger:
        """Open (or create) the ledger in the SQLite file `path`."""
        path = Path(path)
        if must_exist and not path.is_file():
            raise LedgerError("no such ledger database", path=str(path))
        conn = connect(path)
        return cls(conn, signing_key=signing_key, path=str(path))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- reading ------------------------------------------------------------------

    @property
    def size(self) -> int:
        with self._lock:
            self._sync()
            return self._frontier.size

    @property
    def public_key(self) -> str | None:
        if self._key is None:
            return None
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` entries (default: all)."""
        with self._lock:
            self._sync()
            if size is None or size == self._frontier.size:
                return self._frontier.root()
            if not 0 <= size <= self._frontier.size:
                raise LedgerError(f"no tree of size {size} (the ledger has {self.size} entries)")
            return self._subtree(0, size) if size else merkle.EMPTY_ROOT

    def head(self) -> TreeHead:
        """The current tree head, signed if a signing key is configured (not stored)."""
        with self._lock:
            self._sync()
            return self._make_head(self._frontier.size, self._frontier.root())

    def checkpoint(self) -> TreeHead:
        """Record the current tree head in ``ledger_heads`` (signed if a key is set)."""
        with self._lock:
            self._sync()
            head = self._make_head(self._frontier.size, self._frontier.root())
            with transaction(self._conn):
                self._conn.execute(
                    "INSERT OR REPLACE INTO ledger_heads(size, root, ts_ns, signature, public_key)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        head.size,
                        bytes.fromhex(head.root),
                        head.ts_ns,
                        bytes.fromhex(head.signature) if head.signature else None,
                        bytes.fromhex(head.public_key) if head.public_key else None,
                    ),
                )
            return head

    def checkpoint_if_grown(self) -> TreeHead | None:
        """`checkpoint()` if entries were appended since the last recorded head."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(size) FROM ledger_heads").fetchone()
            if self.size == 0 or (row[0] is not None and row[0] >= self.size):
                return None
            return self.checkpoint()

    async def run_checkpoints(self, *, interval_s: float = 3600.0) -> None:
        """Record a (signed) tree head every `interval_s` while the ledger grows; forever.

        Run it as a named task; recorded heads give `verify()` anchors and a
        central office heads to collect. A failure is logged and retried.
        """
        while True:
            try:
                await asyncio.to_thread(self.checkpoint_if_grown)
            except (LedgerError, sqlite3.Error) as exc:
                log.warning("ledger checkpoint failed: %s", exc)
            await asyncio.sleep(interval_s)

    def heads(self) -> list[TreeHead]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT size, root, ts_ns, signature, public_key FROM ledger_heads ORDER BY size"
            ).fetchall()
        return [_head_from_row(r) for r in rows]

    def entry(self, index: int) -> LedgerEntry:
        with self._lock:
            row = self._conn.execute(
                "SELECT entry FROM ledger_entries WHERE idx = ?", (index,)
            ).fetchone()
        if row is None:
            raise LedgerError(f"no ledger entry {index} (the ledger has {self.size} entries)")
        raw = _as_bytes(row[0])
        return LedgerEntry(index, raw, merkle.leaf_hash(raw).hex())

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[LedgerEntry]:
        """Entries ``[start, stop)`` in order (a snapshot read in pages)."""
        stop = self.size if stop is None else stop
        pos = start
        while pos < stop:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT idx, entry FROM ledger_entries WHERE idx >= ? AND idx < ? "
                    "ORDER BY idx LIMIT 1000",
                    (pos, stop),
                ).fetchall()
            if not rows:
                return
            for idx, raw in rows:
                data = _as_bytes(raw)
                yield LedgerEntry(idx, data, merkle.leaf_hash(data).hex())
            pos = rows[-1][0] + 1

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 6962 audit path of entry `index` in the tree of `size` (default: now)."""
        with self._lock:
            self._sync()
            size = self._frontier.size if size is None else size
            if not 0 <= index < size <= self._frontier.size:
                raise LedgerError(f"no entry {index} in a tree of size {size}")
            return merkle.inclusion_proof(index, size, self._subtree)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The RFC 6962 proof that the tree of `old_size` is a prefix of that of `new_size`."""
        with self._lock:
            self._sync()
            new_size = self._frontier.size if new_size is None else new_size
            if not 0 <= old_size <= new_size <= self._frontier.size:
                raise LedgerError(f"no consistency proof from size {old_size} to {new_size}")
            return merkle.consistency_proof(old_size, new_size, self._subtree)

    # --- appending ----------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> int:
        """Append one record in its own transaction; returns its index."""
        with self._lock:
            try:
                with transaction(self._conn):
                    return self.append_in_transaction(record)
            except BaseException:
                self._reload()
                raise

    def append_in_transaction(self, record: Mapping[str, Any]) -> int:
        """Append inside the caller's open transaction (caller holds the lock).

        The record gets ``index`` and ``prev_root`` added. If the caller's
        transaction rolls back it must call `reload()`.
        """
        if "index" in record or "prev_root" in record:
            raise LedgerError("ledger records must not set 'index' or 'prev_root'")
        # Another process may have appended (a second writer on the same file): the
        # open write transaction makes this check and the reload race-free.
        self._sync()
        index = self._frontier.size
        raw = canonical_json({**record, "index": index, "prev_root": self._frontier.root().hex()})
        leaf = merkle.leaf_hash(raw)
        frontier = self._frontier.copy()
        completed = frontier.append(leaf)
        self._conn.execute("INSERT INTO ledger_entries(idx, entry) VALUES (?, ?)", (index, raw))
        self._conn.executemany(
            "INSERT INTO ledger_nodes(level, pos, hash) VALUES (?, ?, ?)",
            [(0, index, leaf), *completed],
        )
        self._frontier = frontier
        return index

    def reload(self) -> None:
        with self._lock:
            self._reload()

    def _sync(self) -> None:
        """Catch up with entries another connection appended (one O(log n) lookup)."""
        (last,) = self._conn.execute("SELECT MAX(idx) FROM ledger_entries").fetchone()
        if (last + 1 if last is not None else 0) != self._frontier.size:
            self._reload()

    # --- verification -------------------------------------------------------------

    def verify(self, *, trusted: TreeHead | None = None) -> VerifyReport:
        """Recompute the whole ledger from its entries; report the first bad entry.

        `trusted` is a tree head obtained elsewhere (for example from the
        central office); its root must match the recomputed one. Reads a
        consistent snapshot through its own read-only connection (appends go
        on meanwhile) and streams the entries: memory stays O(log n).
        """
        if self.path and self.path != ":memory:":
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot open for reading: {exc}", path=self.path) from None
            try:
                conn.execute("BEGIN")  # one WAL snapshot for every read below
                return _verify(conn, trusted)
            finally:
                conn.close()
        with self._lock:
            return _verify(self._conn, trusted)

    # --- internals ----------------------------------------------------------------

    def _make_head(self, size: int, root: bytes) -> TreeHead:
        ts = self._clock()
        if self._key is None:
            return TreeHead(size, root.hex(), ts)
        sig = self._key.sign(head_message(size, root, ts))
        return TreeHead(size, root.hex(), ts, sig.hex(), self.public_key)

    def _reload(self) -> None:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
        nodes: list[bytes] = []
        start = 0
        for level in range(count.bit_length() - 1, -1, -1):
            if count >> level & 1:
                row = self._conn.execute(
                    "SELECT hash FROM ledger_nodes WHERE level = ? AND pos = ?",
                    (level, start >> level),
                ).fetchone()
                if row is None:
                    raise LedgerError(
                        f"ledger node (level {level}, position {start >> level}) is missing; "
                        "run `meterwatch ledger verify`",
                        path=self.path,
                    )
                nodes.append(_as_bytes(row[0]))
                start += 1 << level
        self._frontier = merkle.Frontier.from_nodes(count, nodes)

    def _subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n & (n - 1) == 0:  # perfect and (in RFC 6962 recursion) aligned
            level = n.bit_length() - 1
            row = self._conn.execute(
                "SELECT hash FROM ledger_nodes WHERE level = ? AND pos = ?",
                (level, start >> level),
            ).fetchone()
            if row is None:
                raise LedgerError(f"ledger node (level {level}, position {start >> level}) missing")
            return _as_bytes(row[0])
        k = merkle.split_point(n)
        return merkle.node_hash(self._subtree(start, start + k), self._subtree(start + k, end))


def _verify(conn: sqlite3.Connection, trusted: TreeHead | None) -> VerifyReport:
    heads = [
        _head_from_row(r)
        for r in conn.execute(
            "SELECT size, root, ts_ns, signature, public_key FROM ledger_heads ORDER BY size"
        )
    ]
    frontier = merkle.Frontier()
    roots: dict[int, bytes] = {}
    want_sizes = {h.size for h in heads} | ({trusted.size} if trusted else set())
    computed_nodes = 0

    def stored_node(level: int, pos: int) -> bytes | None:
        row = conn.execute(
            "SELECT hash FROM ledger_nodes WHERE level = ? AND pos = ?", (level, pos)
        ).fetchone()
        return None if row is None else _as_bytes(row[0])

    def bad(index: int, problem: str) -> VerifyReport:
        return VerifyReport(False, frontier.size, frontier.root().hex(), index, problem)

    rows = conn.execute("SELECT idx, entry FROM ledger_entries ORDER BY idx")
    for position, (idx, raw_value) in enumerate(rows):
        raw = _as_bytes(raw_value)
        if idx != position:
            return bad(
                position,
                f"entry {position} is missing (the next stored entry is {idx})"
                if idx > position
                else f"entry {position} is stored out of order as {idx}",
            )
        try:
            record = json.loads(raw.decode("utf-8"))
            canonical = isinstance(record, dict) and canonical_json(record) == raw
        except (ValueError, LedgerError):
            canonical = False
        if not canonical:
            return bad(position, f"entry {position} is not canonical JSON (altered bytes)")
        if record.get("index") != position:
            return bad(
                position,
                f"entry {position} holds the record of entry {record.get('index')} "
                "(entries removed or reordered)",
            )
        # The entry's own leaf first: a changed entry is named itself, and only an
        # entry whose leaf hash was forged too is caught by its successor's prev_root.
        leaf = merkle.leaf_hash(raw)
        if stored_node(0, position) != leaf:
            return bad(position, f"entry {position} does not match its stored leaf hash")
        if record.get("prev_root") != frontier.root().hex():
            culprit = max(position - 1, 0)
            return bad(
                culprit,
                f"entry {culprit} was altered: entry {position}'s prev_root does not match "
                "the tree recomputed before it",
            )
        for level, pos, h in frontier.append(leaf):
            computed_nodes += 1
            if stored_node(level, pos) != h:
                first = pos << level
                return bad(
                    first,
                    f"stored node (level {level}, position {pos}) over entries "
                    f"{first}..{((pos + 1) << level) - 1} does not match them",
                )
        if frontier.size in want_sizes:
            roots[frontier.size] = frontier.root()
    size, root = frontier.size, frontier.root()
    # Hashes stored for entries beyond the last one: the tail was dropped.
    extra = conn.execute(
        "SELECT 1 FROM ledger_nodes WHERE ((pos + 1) << level) > ? LIMIT 1", (size,)
    ).fetchone()
    if extra is not None:
        return bad(size, f"hashes are stored for entry {size} and on, which do not exist")
    checked = 0
    good_below = 0
    for head in [*heads, *([trusted] if trusted else [])]:
        label = "trusted tree head" if head is trusted else "recorded tree head"
        if head.size > size:
            return bad(size, f"{label} of size {head.size} covers entries that are missing")
        if roots.get(head.size, merkle.EMPTY_ROOT).hex() != head.root:
            return bad(
                good_below,
                f"{label} of size {head.size} does not match: an entry in "
                f"{good_below}..{head.size - 1} was altered",
            )
        if head.signature_ok() is False:
            return bad(good_below, f"{label} of size {head.size} has a bad signature")
        if head is not trusted:
            good_below = max(good_below, head.size)
        checked += 1
    return VerifyReport(True, size, root.hex(), heads_checked=checked)


def _as_bytes(value: object) -> bytes:
    """A stored entry as bytes; a tampered row may hold TEXT (SQL string functions return it)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")


def _head_from_row(row: tuple[int, bytes, int, bytes | None, bytes | None]) -> TreeHead:
    size, root, ts_ns, sig, pub = row
    return TreeHead(
        size,
        bytes(root).hex(),
        ts_ns,
        bytes(sig).hex() if sig is not None else None,
        bytes(pub).hex() if pub is not None else None,
    )


def connect(path: str | Path) -> sqlite3.Connection:
    """A SQLite connection set up for the alert store and ledger (WAL, full sync)."""
    try:
        conn = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # Evidence: a committed change must survive a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open database: {exc}", path=str(path)) from None
    # Explicit transactions (BEGIN IMMEDIATE) are issued by `transaction()`.
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises (autocommit connection)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
