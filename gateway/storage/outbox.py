"""The durable outbox: what has been taken but not yet acknowledged by the store.

An entry is a batch of line-protocol points (one gzip member) of one
`EntryKind`: raw readings, alerts or ledger entries. `append_*` returns only
after the entry is committed to the SQLite file, so a batch counts as taken
only once it is on disk; the forwarder removes entries only after the store
acknowledged them (`ack`), so a crash in between resends them, and the
schema's idempotent timestamps turn that resend into an overwrite.

Durability (chosen deliberately): WAL journal with ``synchronous=FULL``, so
every append commit fsyncs the WAL before it returns; an appended batch
survives SIGKILL *and* power loss. Appends are per batch (the pipeline's
flush), so the fsync cost is paid per batch, not per reading. Deletes use the
same connection without waiting for an fsync (``synchronous=NORMAL`` for that
commit only): a delete lost to a power cut only causes a resend, which the
idempotent timestamps turn into an overwrite.

Bound: `max_bytes` (``storage.outbox_max_mb``) caps the stored payload bytes
plus a fixed per-entry overhead; SQLite reuses the freed pages, so the file
stays near that size (plus its WAL, a few MiB between checkpoints; the file
does not shrink after a backlog, it is reused). When an append would exceed it, the outbox drops, in
this order: quarantined raw-reading entries, then the oldest raw-reading
entries that the forwarder is not sending right now; if it still does not
fit, a new raw-reading batch is itself dropped. Alert and ledger entries are
never dropped (they may take the outbox past its bound). Every drop is
counted, in points and entries, and the counters persist in the file.

Failure modes handled: a reading that cannot be encoded (a name line
protocol cannot carry) is skipped, counted as invalid and logged once per
device, and the rest of the batch is kept; a payload the store refuses for
good is moved to a quarantine table (kept, counted), not deleted; all SQLite
work runs in one dedicated thread and encoding in another, never on the event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

from drivers.reading import Reading
from gateway.storage.errors import StorageError
from gateway.storage.schema import ReadingEncoder

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRY_OVERHEAD_BYTES = 64
"""Bytes counted per entry on top of its payload (row header, key, index entry)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    points INTEGER NOT NULL, nbytes INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_kind ON entries(kind, id);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    points INTEGER NOT NULL, nbytes INTEGER NOT NULL, payload BLOB NOT NULL,
    reason TEXT NOT NULL, quarantined_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COUNTERS = (
    "appended_points",
    "dropped_points",
    "dropped_entries",
    "invalid_points",
    "quarantined_points",
    "quarantined_entries",
)


class EntryKind(IntEnum):
    """What an outbox entry carries. Only READINGS may be dropped when full."""

    READINGS = 0
    ALERT = 1
    LEDGER = 2


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    kind: EntryKind
    created_ns: int
    points: int
    payload: bytes
    """One or more gzip members of newline-terminated line-protocol text."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did. `entry_id` is None when nothing was stored."""

    entry_id: int | None
    points: int
    invalid_points: int = 0
    dropped_points: int = 0
    dropped_entries: int = 0
    dropped_self: bool = False
    """True when the new batch itself was dropped because the outbox is full."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    entries: int
    points: int
    bytes: int
    max_bytes: int
    oldest_created_ns: int | None
    appended_points: int
    dropped_points: int
    dropped_entries: int
    invalid_points: int
    quarantined_points: int
    quarantined_entries: int

    def oldest_age_s(self, now_ns: int | None = None) -> float:
        if self.oldest_created_ns is None:
            return 0.0
        now = time.time_ns() if now_ns is None else now_ns
        return max(0.0, (now - self.oldest_created_ns) / 1e9)


class Outbox:
    """A durable, bounded FIFO of line-protocol batches in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        encoder: ReadingEncoder,
        compresslevel: int = 1,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.encoder = encoder
        self._level = compresslevel
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        # Encoding is CPU work; a thread of its own keeps it from queueing SQLite calls
        # (the forwarder's peek and ack) behind it.
        self._encode_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-enc")
        self._db: sqlite3.Connection | None = None
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._entries = 0
        self._points = 0
        self._bytes = 0
        self._oldest_ns: int | None = None
        self._inflight_max = 0
        self._inflight: dict[int, tuple[int, int]] = {}
        self._dropped_bytes = 0
        self._dropped_quarantined = (0, 0)
        self._logged_invalid: set[str] = set()
        self._drop_logged_at: float | None = None
        self._appended = asyncio.Event()

    @classmethod
    async def open(
        cls, path: Path, *, max_bytes: int, encoder: ReadingEncoder, compresslevel: int = 1
    ) -> Outbox:
        """Open (or create) the outbox file; pending entries are kept."""
        outbox = cls(path, max_bytes=max_bytes, encoder=encoder, compresslevel=compresslevel)
        await outbox._run(outbox._open_sync)
        return outbox

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            counters = db.execute("SELECT name, value FROM counters").fetchall()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open outbox {self.path}: {exc}", backend="outbox") from exc
        for name, value in counters:
            if name in self._counters:
                self._counters[name] = int(value)
        self._db = db
        self._recount_sync()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"outbox {self.path} is closed")
        return self._db

    def _recount_sync(self) -> None:
        db = self._conn
        n, points, nbytes = db.execute(
            "SELECT count(*), coalesce(sum(points), 0), coalesce(sum(nbytes), 0) FROM entries"
        ).fetchone()
        (qbytes,) = db.execute("SELECT coalesce(sum(nbytes), 0) FROM quarantine").fetchone()
        self._entries, self._points, self._bytes = int(n), int(points), int(nbytes) + int(qbytes)
        row = db.execute("SELECT created_ns FROM entries ORDER BY id LIMIT 1").fetchone()
        self._oldest_ns = None if row is None else int(row[0])

    # --- appending -------------------------------------------------------------------

    def _encode_readings(self, readings: Sequence[Reading]) -> tuple[list[str], int]:
        lines: list[str] = []
        invalid = 0
        line = self.encoder.line
        for r in readings:
            try:
                lines.append(line(r))
            except Exception as exc:  # one bad reading must not cost the batch
                invalid += 1
                if r.device_id not in self._logged_invalid:
                    self._logged_invalid.add(r.device_id)
                    log.error(
                        "reading cannot be stored, skipped (further ones of this device are"
                        " counted, not logged)",
                        extra={"device": r.device_id, "error": str(exc)},
                    )
        return lines, invalid

    async def append_readings(self, readings: Sequence[Reading]) -> AppendResult:
        """Encode and durably append a batch of readings (one entry)."""
        batch = list(readings)

        def encode() -> tuple[bytes | None, int, int]:
            lines, invalid = self._encode_readings(batch)
            return self._compress(lines), len(lines), invalid

        loop = asyncio.get_running_loop()
        payload, points, invalid = await loop.run_in_executor(self._encode_executor, encode)
        return await self._store(EntryKind.READINGS, payload, points, invalid)

    async def append_lines(self, kind: EntryKind, lines: Sequence[str]) -> AppendResult:
        """Durably append pre-encoded lines (alerts, ledger entries, ...) as one entry."""
        batch = [line.rstrip("\n") for line in lines if line]
        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(self._encode_executor, self._compress, batch)
        return await self._store(EntryKind(kind), payload, len(batch), 0)

    def _compress(self, lines: list[str]) -> bytes | None:
        if not lines:
            return None
        return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=self._level)

    async def _store(
        self, kind: EntryKind, payload: bytes | None, points: int, invalid: int
    ) -> AppendResult:
        result = await self._run(lambda: self._append_sync(kind, payload, points, invalid))
        if result.entry_id is not None:
            self._appended.set()
        return result

    def _append_sync(
        self, kind: EntryKind, payload: bytes | None, points: int, invalid: int
    ) -> AppendResult:
        db = self._conn
        if payload is None:
            if invalid:
                self._bump_sync({"invalid_points": invalid})
            return AppendResult(None, 0, invalid_points=invalid)
        nbytes = len(payload) + ENTRY_OVERHEAD_BYTES
        now = time.time_ns()
        db.execute("BEGIN IMMEDIATE")
        try:
            dropped_points, dropped_entries, freed = self._make_room_sync(nbytes)
            if self._bytes - freed + nbytes > self.max_bytes and kind is EntryKind.READINGS:
                # Full of alerts, ledger entries and batches in flight: the new batch goes.
                counts = {
                    "dropped_points": dropped_points + points,
                    "dropped_entries": dropped_entries + 1,
                    "invalid_points": invalid,
                }
                self._write_counters_sync(counts)
                db.execute("COMMIT")
                self._apply_counters(counts)
                self._after_drop_sync(dropped_points, dropped_entries, new_dropped=True)
                return AppendResult(
                    None, 0, invalid, dropped_points + points, dropped_entries + 1, True
                )
            cur = db.execute(
                "INSERT INTO entries(kind, created_ns, points, nbytes, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                (int(kind), now, points, nbytes, payload),
            )
            counts = {
                "appended_points": points,
                "dropped_points": dropped_points,
                "dropped_entries": dropped_entries,
                "invalid_points": invalid,
            }
            self._write_counters_sync(counts)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount_sync()
            raise
        self._apply_counters(counts)
        self._entries += 1
        self._points += points
        self._bytes += nbytes
        if self._oldest_ns is None:
            self._oldest_ns = now
        if dropped_entries:
            self._after_drop_sync(dropped_points, dropped_entries)
        return AppendResult(cur.lastrowid, points, invalid, dropped_points, dropped_entries)

    def _make_room_sync(self, nbytes: int) -> tuple[int, int, int]:
        """Delete droppable entries (inside the caller's transaction) until `nbytes` fits."""
        db = self._conn
        need = self._bytes + nbytes - self.max_bytes
        points = entries = freed = 0
        points_q = entries_q = 0
        self._dropped_bytes = 0
        self._dropped_quarantined = (0, 0)
        if need <= 0:
            return 0, 0, 0
        for table, extra in (("quarantine", ""), ("entries", f" AND id > {self._inflight_max}")):
            while freed < need:
                rows = db.execute(
                    f"SELECT id, points, nbytes FROM {table} WHERE kind = ?{extra}"  # noqa: S608
                    " ORDER BY id LIMIT 256",
                    (int(EntryKind.READINGS),),
                ).fetchall()
                if not rows:
                    break
                victims = []
                for row_id, p, b in rows:
                    victims.append((row_id,))
                    points += p
                    entries += 1
                    freed += b
                    if freed >= need:
                        break
                db.executemany(f"DELETE FROM {table} WHERE id = ?", victims)  # noqa: S608
            if table == "quarantine":
                points_q, entries_q = points, entries
        self._dropped_bytes = freed
        self._dropped_quarantined = (points_q, entries_q)
        return points, entries, freed

    def _after_drop_sync(self, points: int, entries: int, *, new_dropped: bool = False) -> None:
        """Update the in-memory depth after `_make_room_sync` deleted rows."""
        q_points, q_entries = self._dropped_quarantined
        self._entries -= entries - q_entries
        self._points -= points - q_points
        self._bytes -= self._dropped_bytes
        row = self._conn.execute("SELECT created_ns FROM entries ORDER BY id LIMIT 1").fetchone()
        self._oldest_ns = None if row is None else int(row[0])
        now = time.monotonic()
        quiet = self._drop_logged_at is not None and now - self._drop_logged_at < 60
        if (entries or new_dropped) and not quiet:
            # Once when dropping starts, then at most once a minute while it goes on.
            self._drop_logged_at = now
            log.warning(
                "outbox full: dropping the oldest raw readings (counted in metrics)",
                extra={
                    "dropped_points_total": self._counters["dropped_points"],
                    "outbox": str(self.path),
                },
            )

    def _write_counters_sync(self, counts: dict[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counts.items() if v],
        )

    def _apply_counters(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self._counters[k] += v

    def _bump_sync(self, counts: dict[str, int]) -> None:
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            self._write_counters_sync(counts)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._apply_counters(counts)

    # --- forwarding --------------------------------------------------------------------

    async def peek(self, *, max_points: int, max_entries: int = 10_000) -> list[OutboxEntry]:
        """The oldest entries, in order, up to `max_points` (at least one entry).

        They are marked in flight: the drop policy leaves them alone until
        `ack` or `release`.
        """

        def work() -> list[OutboxEntry]:
            out: list[OutboxEntry] = []
            total = 0
            cursor = self._conn.execute(
                "SELECT id, kind, created_ns, points, nbytes, payload FROM entries"
                " ORDER BY id LIMIT ?",
                (max_entries,),
            )
            inflight: dict[int, tuple[int, int]] = {}
            for row_id, kind, created, points, nbytes, payload in cursor:
                if out and total + points > max_points:
                    break
                out.append(OutboxEntry(row_id, EntryKind(kind), created, points, payload))
                inflight[row_id] = (points, nbytes)
                total += points
            cursor.close()
            self._inflight = inflight
            self._inflight_max = out[-1].id if out else 0
            return out

        return await self._run(work)

    async def release(self) -> None:
        """Nothing is in flight any more (a send failed; entries stay queued)."""

        def work() -> None:
            self._inflight_max = 0
            self._inflight = {}

        await self._run(work)

    async def ack(self, entry_ids: Sequence[int]) -> None:
        """Delete entries the store has acknowledged."""
        ids = [(int(i),) for i in entry_ids]

        def work() -> None:
            db = self._conn
            known = all(i in self._inflight for (i,) in ids)
            # A delete need not reach the disk before we go on: if a power cut loses it,
            # the entry is sent again and overwrites itself. The next append's fsync
            # (FULL) makes it durable anyway, since the WAL is written in order.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                deleted = sum(
                    db.execute("DELETE FROM entries WHERE id = ?", i).rowcount for i in ids
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("PRAGMA synchronous=FULL")
            if known and deleted == len(ids):
                for (i,) in ids:
                    points, nbytes = self._inflight.pop(i)
                    self._entries -= 1
                    self._points -= points
                    self._bytes -= nbytes
                row = db.execute("SELECT created_ns FROM entries ORDER BY id LIMIT 1").fetchone()
                self._oldest_ns = None if row is None else int(row[0])
            else:
                self._recount_sync()
            self._inflight_max = 0
            self._inflight = {}

        await self._run(work)

    async def quarantine(self, entry_id: int, reason: str) -> None:
        """Move an entry the store refused for good out of the queue (kept, counted)."""

        def work() -> None:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT kind, created_ns, points, nbytes, payload FROM entries WHERE id = ?",
                    (entry_id,),
                ).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return
                db.execute(
                    "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, *row, reason[:1000], time.time_ns()),
                )
                db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                counts = {"quarantined_points": int(row[2]), "quarantined_entries": 1}
                self._write_counters_sync(counts)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._apply_counters(counts)
            self._recount_sync()

        await self._run(work)

    async def wait_for_entries(self, timeout_s: float) -> None:
        """Return when something was appended, or after `timeout_s`."""
        if self._entries:
            return
        self._appended.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout_s)

    def stats(self) -> OutboxStats:
        """Current depth and counters (from memory; no I/O)."""
        c = self._counters
        return OutboxStats(
            entries=self._entries,
            points=self._points,
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            oldest_created_ns=self._oldest_ns,
            appended_points=c["appended_points"],
            dropped_points=c["dropped_points"],
            dropped_entries=c["dropped_entries"],
            invalid_points=c["invalid_points"],
            quarantined_points=c["quarantined_points"],
            quarantined_entries=c["quarantined_entries"],
        )

    async def kinds(self) -> list[tuple[int, EntryKind, int]]:
        """``(id, kind, points)`` of every queued entry, in order (for tools and tests)."""
        return await self._run(
            lambda: [
                (int(i), EntryKind(k), int(p))
                for i, k, p in self._conn.execute(
                    "SELECT id, kind, points FROM entries ORDER BY id"
                )
            ]
        )

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(shut)
        self._executor.shutdown(wait=True)
        self._encode_executor.shutdown(wait=True)
