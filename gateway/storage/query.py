"""History queries: the `ReadingStore` interface, its result type, and InfluxQL text.

The InfluxQL builders are pure functions. Every identifier is double-quoted
and every string literal single-quoted with backslash escapes, so a device id
or field name can never end a literal early; numbers are validated and
formatted by us (times as integer ns, intervals as integer µs), never pasted.

Failure modes handled: an empty or reversed time range, a non-positive,
non-finite or sub-microsecond interval, an unknown aggregate and empty field
lists raise `QueryError` before anything is sent; an ``error`` in a server
answer becomes a `QueryError` carrying the server's message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from drivers.reading import Reading
from gateway.storage.errors import QueryError
from gateway.storage.schema import (
    FIELD_QUALITY,
    FIELD_SEQ,
    MEASUREMENTS,
    TAG_DEVICE,
    TAG_KEYS,
    TAG_SITE,
)


class Agg(StrEnum):
    """Per-interval aggregate of a downsampled query."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A device's history in columns.

    `ts_ns[i]` is the (stored) time of row i: the reading time for raw
    queries, the start of the interval for downsampled ones (intervals are
    aligned to the Unix epoch; empty intervals are left out). `columns` maps
    each field to its values (None where the row lacks it). `seq` and
    `quality` are filled for raw queries only. Rows are in time order.
    """

    device_id: str
    ts_ns: list[int]
    columns: dict[str, list[float | None]]
    seq: list[int] = field(default_factory=list)
    quality: list[str] = field(default_factory=list)
    agg: Agg | None = None
    every_s: float | None = None

    def __len__(self) -> int:
        return len(self.ts_ns)


@runtime_checkable
class ReadingStore(Protocol):
    """Where readings live and are read back from (embedded SQLite, InfluxDB v1, v2)."""

    name: str

    async def write(self, readings: Sequence[Reading]) -> None:
        """Store readings now (an overwrite if a reading is written again)."""

    async def write_gzip(self, body: bytes, *, points: int) -> None:
        """Store a gzip body of schema lines (concatenated members); used by the forwarder."""

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
        """A device's fields over ``[start_ns, end_ns)``, raw or per `every_s` interval."""

    async def latest(self, device_id: str) -> Reading | None:
        """The device's most recent stored reading, or None."""

    async def close(self) -> None:
        """Release connections and files."""


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """Validated query arguments."""

    device_id: str
    fields: tuple[str, ...] | None
    start_ns: int
    end_ns: int
    every_ns: int | None
    agg: Agg
    limit: int | None


def validate_query(
    device_id: str,
    *,
    fields: Sequence[str] | None,
    start_ns: int,
    end_ns: int,
    every_s: float | None,
    agg: Agg | str,
    limit: int | None,
) -> QuerySpec:
    """Check and normalise query arguments; raises `QueryError` naming the bad one."""
    if not isinstance(device_id, str) or not device_id:
        raise QueryError("device_id must be a non-empty string")
    try:
        agg_v = Agg(agg)
    except ValueError:
        raise QueryError(
            f"agg must be one of {', '.join(a.value for a in Agg)}, not {agg!r}"
        ) from None
    if isinstance(start_ns, bool) or isinstance(end_ns, bool):
        raise QueryError("start_ns and end_ns must be integers")
    try:
        start, end = int(start_ns), int(end_ns)
    except (TypeError, ValueError):
        raise QueryError("start_ns and end_ns must be integers") from None
    if end <= start:
        raise QueryError(f"empty time range: end_ns {end} <= start_ns {start}")
    every_ns: int | None = None
    if every_s is not None:
        if not isinstance(every_s, int | float) or not math.isfinite(every_s) or every_s <= 0:
            raise QueryError(f"every_s must be a positive number, not {every_s!r}")
        every_ns = round(every_s * 1_000_000) * 1000
        if every_ns <= 0:
            raise QueryError(f"every_s {every_s} is below one microsecond")
    fields_t: tuple[str, ...] | None = None
    if fields is not None:
        if isinstance(fields, str):
            fields = [fields]
        fields_t = tuple(dict.fromkeys(fields))
        if not fields_t or not all(isinstance(f, str) and f for f in fields_t):
            raise QueryError("fields must be a non-empty list of field names (or None for all)")
        if any(f in TAG_KEYS or f in (FIELD_SEQ, FIELD_QUALITY) for f in fields_t):
            raise QueryError("fields must not name tags, seq or quality")
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    return QuerySpec(device_id, fields_t, start, end, every_ns, agg_v, limit)


# --- InfluxQL ---------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: ``"..."`` with ``\\`` and ``"`` escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal: ``'...'`` with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


FROM_ALL = ",".join(quote_ident(m) for m in MEASUREMENTS)


def _where(spec: QuerySpec, site_id: str) -> str:
    return (
        f"WHERE {quote_ident(TAG_SITE)} = {quote_string(site_id)} "
        f"AND {quote_ident(TAG_DEVICE)} = {quote_string(spec.device_id)} "
        f"AND time >= {spec.start_ns} AND time < {spec.end_ns}"
    )


def influxql_history(spec: QuerySpec, *, site_id: str, fields: Sequence[str] | None) -> str:
    """The SELECT for `spec`. `fields` overrides spec.fields (None: all, raw only)."""
    limit = f" LIMIT {spec.limit}" if spec.limit else ""
    if spec.every_ns is None:
        cols = (
            "*"
            if fields is None
            else ",".join(quote_ident(f) for f in (*fields, FIELD_SEQ, FIELD_QUALITY))
        )
        return f"SELECT {cols} FROM {FROM_ALL} {_where(spec, site_id)} ORDER BY time ASC{limit}"  # noqa: S608
    if not fields:
        raise QueryError("a downsampled query needs field names")
    fn = spec.agg.value
    cols = ",".join(f"{fn}({quote_ident(f)})" for f in fields)
    return (
        f"SELECT {cols} FROM {FROM_ALL} {_where(spec, site_id)} "  # noqa: S608 (all quoted)
        f"GROUP BY time({spec.every_ns // 1000}u) fill(none) ORDER BY time ASC{limit}"
    )


def influxql_latest(device_id: str, *, site_id: str) -> str:
    return (
        f"SELECT * FROM {FROM_ALL} WHERE {quote_ident(TAG_SITE)} = {quote_string(site_id)} "  # noqa: S608
        f"AND {quote_ident(TAG_DEVICE)} = {quote_string(device_id)} ORDER BY time DESC LIMIT 1"
    )


def influxql_float_fields() -> str:
    return f"SHOW FIELD KEYS FROM {FROM_ALL}"


def series_of(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The series of the first statement of a /query answer; raises on errors."""
    if "error" in answer:
        raise QueryError(str(answer["error"]))
    results = answer.get("results") or []
    if not results:
        return []
    first = results[0]
    if "error" in first:
        raise QueryError(str(first["error"]))
    return list(first.get("series") or [])


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def result_from_series(
    spec: QuerySpec, series: Iterable[Mapping[str, Any]], fields: Sequence[str] | None
) -> QueryResult:
    """Build a `QueryResult` from /query series (several measurements merged by time)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    names: dict[str, None] = dict.fromkeys(fields or ())
    for s in series:
        columns: list[str] = list(s.get("columns") or [])
        for values in s.get("values") or []:
            row = dict(zip(columns, values, strict=False))
            rows.append((int(row.pop("time")), row))
        if spec.every_ns is None and fields is None:
            for c in columns:
                if c != "time" and c not in TAG_KEYS and c not in (FIELD_SEQ, FIELD_QUALITY):
                    names.setdefault(c, None)
    rows.sort(key=lambda r: r[0])
    if spec.limit:
        rows = rows[: spec.limit]
    ts = [t for t, _ in rows]
    if spec.every_ns is None:
        cols = {n: [_num(r.get(n)) for _, r in rows] for n in (fields or sorted(names))}
        if fields is None:
            cols = {n: c for n, c in cols.items() if any(v is not None for v in c)}
        return QueryResult(
            spec.device_id,
            ts,
            cols,
            seq=[int(r.get(FIELD_SEQ) or 0) for _, r in rows],
            quality=[str(r.get(FIELD_QUALITY) or "") for _, r in rows],
        )
    # Downsampled: columns come back as mean, mean_1, ... in select order.
    assert fields is not None
    positional: list[list[float | None]] = [[] for _ in fields]
    for _, r in rows:
        vals = list(r.values())
        for i, col in enumerate(positional):
            col.append(_num(vals[i]) if i < len(vals) else None)
    cols = dict(zip(fields, positional, strict=True))
    if spec.fields is None:
        cols = {n: c for n, c in cols.items() if any(v is not None for v in c)}
    return QueryResult(spec.device_id, ts, cols, agg=spec.agg, every_s=spec.every_ns / 1e9)
