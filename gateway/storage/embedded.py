"""The embedded reading store: SQLite in WAL mode, the default without InfluxDB.

Tables: ``readings`` (device, stored ts, seq, kind, quality), ``samples``
(device, ts, field, value; one row per field value) and ``rollups`` (hourly
count/sum/min/max/last per device and field). Timestamps are the schema's
stored timestamps (`schema.point_ts_ns`), and (device, ts) is the key, so a
rewritten reading overwrites, as in InfluxDB (fields missing from the
rewrite keep their old values there too).

Roll-ups are recomputed from raw samples for the hours a write touched
(tracked in ``dirty``), lazily before a query that reads them and in
`maintain`. Raw samples are kept `raw_retention_days`, roll-ups
`retention_days`; downsampled queries whose interval is a whole number of
hours read the roll-ups, so they still answer after the raw rows are gone.

Every SQLite call runs in one dedicated thread, never on the event loop; the
connection uses ``synchronous=FULL`` because the outbox deletes a batch as
soon as this store has accepted it, so the commit must be on disk by then.

Failure modes handled: points of other schemas in a forwarded body are
skipped (alerts and ledger entries already live in their own local SQLite
databases); a corrupt body raises `LineProtocolError` (the forwarder
quarantines it); invalid query arguments raise `QueryError`.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from drivers.reading import DeviceKind, Reading, now_ns
from gateway.storage.errors import StorageError, gunzip_text
from gateway.storage.lineprotocol import parse_lines
from gateway.storage.query import Agg, QueryResult, QuerySpec, validate_query
from gateway.storage.schema import point_ts_ns, reading_from_point

ROLLUP_NS = 3600 * 1_000_000_000
DAY_NS = 86400 * 1_000_000_000
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings(
    device TEXT NOT NULL, ts_ns INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, quality TEXT NOT NULL, PRIMARY KEY (device, ts_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples(
    device TEXT NOT NULL, field TEXT NOT NULL, ts_ns INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (device, ts_ns, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups(
    device TEXT NOT NULL, field TEXT NOT NULL, bucket_ns INTEGER NOT NULL,
    n INTEGER NOT NULL, total REAL NOT NULL, vmin REAL NOT NULL, vmax REAL NOT NULL,
    last_ts INTEGER NOT NULL, last_value REAL NOT NULL,
    PRIMARY KEY (device, field, bucket_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty(
    device TEXT NOT NULL, bucket_ns INTEGER NOT NULL,
    PRIMARY KEY (device, bucket_ns)) WITHOUT ROWID;
"""

_AGG_SQL_RAW = {
    Agg.MEAN: "avg(value)",
    Agg.MIN: "min(value)",
    Agg.MAX: "max(value)",
    Agg.LAST: "value, max(ts_ns)",  # SQLite: a bare column comes from the max() row
}
_AGG_SQL_ROLLUP = {
    Agg.MEAN: "sum(total) / sum(n)",
    Agg.MIN: "min(vmin)",
    Agg.MAX: "max(vmax)",
    Agg.LAST: "last_value, max(last_ts)",
}


class EmbeddedStore:
    """`ReadingStore` on a local SQLite file."""

    name = "embedded"

    def __init__(
        self,
        path: Path,
        *,
        raw_retention_days: float = 90,
        retention_days: float = 400,
    ) -> None:
        self.path = Path(path)
        self.raw_retention_days = raw_retention_days
        self.retention_days = retention_days
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-store")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @classmethod
    async def open(
        cls, path: Path, *, raw_retention_days: float = 90, retention_days: float = 400
    ) -> EmbeddedStore:
        store = cls(path, raw_retention_days=raw_retention_days, retention_days=retention_days)
        await store._run(store._open_sync)
        return store

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open {self.path}: {exc}", backend=self.name) from exc
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("embedded store is not open")
        return self._db

    # --- writing ------------------------------------------------------------------

    def _insert_sync(self, readings: Sequence[Reading], *, stored_ts: bool) -> None:
        db = self.db
        rows = []
        samples = []
        dirty = set()
        for r in readings:
            ts = r.ts_ns if stored_ts else point_ts_ns(r.ts_ns, r.seq)
            rows.append((r.device_id, ts, r.seq, r.kind.value, str(r.quality)))
            for name, value in r.fields.items():
                v = float(value)
                if math.isfinite(v):
                    samples.append((r.device_id, name, ts, v))
            dirty.add((r.device_id, ts - ts % ROLLUP_NS))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", samples)
            db.executemany("INSERT OR IGNORE INTO dirty VALUES (?, ?)", sorted(dirty))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def write(self, readings: Sequence[Reading]) -> None:
        if readings:
            batch = list(readings)
            await self._run(lambda: self._insert_sync(batch, stored_ts=False))

    async def write_gzip(self, body: bytes, *, points: int) -> None:
        def work() -> None:
            text = gunzip_text(body, backend=self.name)
            readings = [r for p in parse_lines(text) if (r := reading_from_point(p)) is not None]
            if readings:
                self._insert_sync(readings, stored_ts=True)

        await self._run(work)

    # --- roll-ups and retention -----------------------------------------------------

    def _refresh_sync(self, device: str | None = None) -> int:
        db = self.db
        if device is None:
            dirty = db.execute("SELECT device, bucket_ns FROM dirty").fetchall()
        else:
            dirty = db.execute(
                "SELECT device, bucket_ns FROM dirty WHERE device = ?", (device,)
            ).fetchall()
        if not dirty:
            return 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for dev, bucket in dirty:
                end = bucket + ROLLUP_NS
                db.execute("DELETE FROM rollups WHERE device = ? AND bucket_ns = ?", (dev, bucket))
                db.execute(
                    "INSERT INTO rollups SELECT s.device, s.field, ?, count(*), sum(s.value),"
                    " min(s.value), max(s.value), max(s.ts_ns),"
                    " (SELECT l.value FROM samples l WHERE l.device = s.device"
                    "  AND l.field = s.field AND l.ts_ns >= ? AND l.ts_ns < ?"
                    "  ORDER BY l.ts_ns DESC LIMIT 1)"
                    " FROM samples s WHERE s.device = ? AND s.ts_ns >= ? AND s.ts_ns < ?"
                    " GROUP BY s.device, s.field",
                    (bucket, bucket, end, dev, bucket, end),
                )
                db.execute("DELETE FROM dirty WHERE device = ? AND bucket_ns = ?", (dev, bucket))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(dirty)

    def _maintain_sync(self, now: int) -> dict[str, int]:
        self._refresh_sync()
        db = self.db
        raw_cut = now - int(self.raw_retention_days * DAY_NS)
        roll_cut = now - int(self.retention_days * DAY_NS)
        deleted = {"readings": 0, "samples": 0, "rollups": 0}
        pairs = db.execute("SELECT DISTINCT device, field FROM rollups").fetchall()
        devices = sorted({d for d, _ in pairs})
        db.execute("BEGIN IMMEDIATE")
        try:
            for dev, fld in pairs:
                deleted["rollups"] += db.execute(
                    "DELETE FROM rollups WHERE device = ? AND field = ? AND bucket_ns < ?",
                    (dev, fld, roll_cut),
                ).rowcount
            for dev in devices:
                deleted["samples"] += db.execute(
                    "DELETE FROM samples WHERE device = ? AND ts_ns < ?", (dev, raw_cut)
                ).rowcount
                deleted["readings"] += db.execute(
                    "DELETE FROM readings WHERE device = ? AND ts_ns < ?", (dev, raw_cut)
                ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return deleted

    async def maintain(self, *, now: int | None = None) -> dict[str, int]:
        """Refresh roll-ups, then apply retention. Returns rows deleted per table."""
        t = now_ns() if now is None else now
        return await self._run(lambda: self._maintain_sync(t))

    # --- reading --------------------------------------------------------------------

    def _query_sync(self, spec: QuerySpec) -> QueryResult:
        db = self.db
        dev, start, end = spec.device_id, spec.start_ns, spec.end_ns
        if spec.every_ns is None:
            rows = db.execute(
                "SELECT ts_ns, seq, quality FROM readings WHERE device = ? AND ts_ns >= ?"
                " AND ts_ns < ? ORDER BY ts_ns LIMIT ?",
                (dev, start, end, spec.limit or -1),
            ).fetchall()
            ts = [r[0] for r in rows]
            if spec.limit and ts:
                end = ts[-1] + 1
            index = {t: i for i, t in enumerate(ts)}
            sql = (
                "SELECT field, ts_ns, value FROM samples"
                " WHERE device = ? AND ts_ns >= ? AND ts_ns < ?"
            )
            params: list[object] = [dev, start, end]
            if spec.fields is not None:
                sql += f" AND field IN ({','.join('?' * len(spec.fields))})"
                params += spec.fields
            cols: dict[str, list[float | None]] = {f: [None] * len(ts) for f in spec.fields or ()}
            for name, t, value in db.execute(sql, params):
                i = index.get(t)
                if i is None:
                    continue
                col = cols.get(name)
                if col is None:
                    col = cols[name] = [None] * len(ts)
                col[i] = value
            if spec.fields is None:
                cols = dict(sorted(cols.items()))
            return QueryResult(
                dev, ts, cols, seq=[r[1] for r in rows], quality=[r[2] for r in rows]
            )
        every = spec.every_ns
        use_rollups = every % ROLLUP_NS == 0
        if use_rollups:
            self._refresh_sync(dev)
            table, tcol, expr = "rollups", "bucket_ns", _AGG_SQL_ROLLUP[spec.agg]
        else:
            table, tcol, expr = "samples", "ts_ns", _AGG_SQL_RAW[spec.agg]
        sql = (
            f"SELECT field, {tcol} - ({tcol} % ?) AS b, {expr} FROM {table}"  # noqa: S608 (fixed names)
            f" WHERE device = ? AND {tcol} >= ? AND {tcol} < ?"
        )
        params = [every, dev, start, end]
        if spec.fields is not None:
            sql += f" AND field IN ({','.join('?' * len(spec.fields))})"
            params += spec.fields
        sql += " GROUP BY field, b"
        buckets: dict[int, dict[str, float]] = {}
        names: dict[str, None] = dict.fromkeys(spec.fields or ())
        for row in db.execute(sql, params):
            name, b, value = row[0], row[1], row[2]
            buckets.setdefault(b, {})[name] = value
            names.setdefault(name, None)
        ts = sorted(buckets)
        if spec.limit:
            ts = ts[: spec.limit]
        order = list(names) if spec.fields is not None else sorted(names)
        cols = {n: [buckets[b].get(n) for b in ts] for n in order}
        return QueryResult(dev, ts, cols, agg=spec.agg, every_s=every / 1e9)

    async def query(
        self,
        device_id: str,
        *,
        fields: Sequence[str] | None = None,
        start_ns: int,
        end_ns: int,
        every_s: float | None = None,
        agg: Agg | str = Agg.MEAN,
        limit: int | None = None,
    ) -> QueryResult:
        spec = validate_query(
            device_id,
            fields=fields,
            start_ns=start_ns,
            end_ns=end_ns,
            every_s=every_s,
            agg=agg,
            limit=limit,
        )
        return await self._run(lambda: self._query_sync(spec))

    def _latest_sync(self, device_id: str) -> Reading | None:
        row = self.db.execute(
            "SELECT ts_ns, seq, kind, quality FROM readings WHERE device = ?"
            " ORDER BY ts_ns DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        ts, seq, kind, quality = row
        values = dict(
            self.db.execute(
                "SELECT field, value FROM samples WHERE device = ? AND ts_ns = ?",
                (device_id, ts),
            ).fetchall()
        )
        return Reading(device_id, DeviceKind(kind), ts, seq, values, quality)

    async def latest(self, device_id: str) -> Reading | None:
        return await self._run(lambda: self._latest_sync(device_id))

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(shut)
        self._executor.shutdown(wait=True)
