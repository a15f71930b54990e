"""`AlertStore`: findings become alerts with a lifecycle, in SQLite, ledgered.

One *active* (open or acknowledged) alert per (device, detector): a further
finding is merged into it (count, latest numbers and evidence digest, highest
severity) instead of raising a new one; after the alert is resolved or
dismissed, a recurrence raises a new alert that links back (`previous_id`).
A finding that falls in a maintenance window is recorded and ledgered but
raises nothing.

Every change writes the alert row, its history entry and its ledger entry in
one SQLite transaction on one connection: an alert change without its ledger
entry cannot be committed, and a crash leaves neither. After the commit the
change goes to the synchronous listeners (delivery queues) and to the async
change feed.

Concurrency: the methods are synchronous and thread-safe (one lock around
the connection). Each write commits with ``synchronous=FULL`` (an fsync), so
from asyncio use the ``a``-prefixed wrappers, which run them in a worker
thread. Failure modes handled: unknown alert ids (`AlertNotFoundError`),
invalid transitions (`InvalidTransitionError`), bad cursors or limits
(`InvalidQueryError`), a finding without devices or with a NaN score
(`AlertError` naming the detector), a listener that raises (logged, the
change stands).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import threading
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from anomaly.finding import Finding, Severity
from drivers.reading import DeviceKind, Reading, now_ns
from gateway.alerts.feed import ChangeFeed, Subscription
from gateway.alerts.maintenance import Window, covering, parse_windows
from gateway.alerts.model import (
    ACTION_CHANGE,
    SEVERITY_RANK,
    SYSTEM_ACTOR,
    TRANSITIONS,
    Alert,
    AlertAction,
    AlertChange,
    AlertError,
    AlertNotFoundError,
    AlertStatus,
    ChangeKind,
    HistoryEntry,
    InvalidQueryError,
    InvalidTransitionError,
    Page,
    SuppressedFinding,
)
from gateway.config import Settings
from gateway.evidence.digest import readings_digest
from gateway.ledger.store import Ledger, connect, load_signing_key, transaction

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000
MAX_NOTE_CHARS = 4_000
MAX_WHO_CHARS = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    detector TEXT NOT NULL,
    grp TEXT,
    devices TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    count INTEGER NOT NULL,
    score REAL NOT NULL,
    threshold REAL NOT NULL,
    estimate REAL,
    ci_low REAL,
    ci_high REAL,
    unit TEXT,
    explanation TEXT NOT NULL,
    window_start_ns INTEGER NOT NULL,
    window_end_ns INTEGER NOT NULL,
    evidence_digest TEXT NOT NULL,
    details TEXT NOT NULL,
    previous_id INTEGER REFERENCES alerts(id)
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active
    ON alerts(device, detector) WHERE status IN ('open', 'acknowledged');
CREATE INDEX IF NOT EXISTS alerts_site ON alerts(site, id);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts(device, id);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status, id);
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    kind TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    who TEXT NOT NULL,
    note TEXT,
    ledger_index INTEGER NOT NULL,
    evidence_digest TEXT,
    score REAL,
    window_start_ns INTEGER,
    window_end_ns INTEGER
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history(alert_id, id);
CREATE TABLE IF NOT EXISTS alert_evidence (
    alert_id INTEGER PRIMARY KEY REFERENCES alerts(id),
    digest TEXT NOT NULL,
    readings BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS suppressed_findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    detector TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    window_start_ns INTEGER NOT NULL,
    window_end_ns INTEGER NOT NULL,
    evidence_digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    ledger_index INTEGER NOT NULL
);
"""

_COLUMNS = (
    "id, site, device, detector, grp, devices, severity, status, first_seen_ns, last_seen_ns, "
    "updated_ns, count, score, threshold, estimate, ci_low, ci_high, unit, explanation, "
    "window_start_ns, window_end_ns, evidence_digest, details, previous_id"
)
_HISTORY_COLUMNS = (
    "alert_id, kind, ts_ns, who, note, ledger_index, evidence_digest, score, "
    "window_start_ns, window_end_ns"
)

Listener = Callable[[AlertChange], None]


def _num(value: float | None) -> float | str | None:
    """A float for the ledger's JSON: non-finite values as the strings 'inf', '-inf'."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def finding_record(finding: Finding) -> dict[str, Any]:
    """The finding as the ledger records it (JSON-safe)."""
    return {
        "detector": finding.detector,
        "devices": list(finding.devices),
        "score": _num(finding.score),
        "threshold": _num(finding.threshold),
        "window_start_ns": finding.window_start_ns,
        "window_end_ns": finding.window_end_ns,
        "explanation": finding.explanation,
        "severity": finding.severity.value,
        "group": finding.group,
        "estimate": _num(finding.estimate),
        "ci_low": _num(finding.ci_low),
        "ci_high": _num(finding.ci_high),
        "unit": finding.unit,
        "details": {k: _num(float(v)) for k, v in sorted(finding.details.items())},
    }


def encode_readings(readings: Sequence[Reading]) -> bytes:
    """Readings as zlib-compressed JSON lines (kind included; NaN kept as NaN)."""
    lines = [
        json.dumps(
            [r.device_id, r.kind.value, r.seq, r.ts_ns, str(r.quality), dict(r.fields)],
            separators=(",", ":"),
        )
        for r in readings
    ]
    return zlib.compress("\n".join(lines).encode("utf-8"), 6)


def decode_readings(blob: bytes) -> list[Reading]:
    text = zlib.decompress(blob).decode("utf-8")
    out: list[Reading] = []
    for line in text.split("\n") if text else ():
        device, kind, seq, ts_ns, quality, fields = json.loads(line)
        out.append(Reading(device, DeviceKind(kind), ts_ns, seq, fields, quality))
    return out


def _encode_cursor(alert_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{alert_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not text.startswith("a"):
            raise ValueError(text)
        value = int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidQueryError(f"invalid cursor {cursor[:40]!r}") from None
    if value < 0:
        raise InvalidQueryError(f"invalid cursor {cursor[:40]!r}")
    return value


class AlertStore:
    """Alerts with a lifecycle in SQLite; every change ledgered in the same transaction.

    ``AlertStore(path, *, maintenance=(), signing_key_hex=None)`` opens (or
    creates) the database; ``store.ledger`` is the evidence `Ledger` in the
    same file. See the module docstring of `gateway.alerts` for the API.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        maintenance: Sequence[Window] = (),
        signing_key_hex: str | None = None,
        feed_queue_size: int = 256,
        clock: Callable[[], int] = now_ns,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = connect(self.path)
        with self._lock:
            self._conn.executescript(SCHEMA)
        key = load_signing_key(signing_key_hex) if signing_key_hex else None
        self.ledger = Ledger(
            self._conn, lock=self._lock, signing_key=key, clock=clock, path=str(self.path)
        )
        self._maintenance = tuple(maintenance)
        self._clock = clock
        self._feed = ChangeFeed(max_queue=feed_queue_size)
        self._listeners: list[Listener] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, path: str | Path | None = None) -> AlertStore:
        """Open ``<storage.data_dir>/alerts.sqlite`` (or `path`) with the alert settings."""
        alerts = settings.alerts
        key = alerts.ledger_signing_key
        return cls(
            path or settings.storage.data_dir / "alerts.sqlite",
            maintenance=parse_windows(
                alerts.maintenance,
                timezone=settings.site.timezone,
                known={d.id for d in settings.devices} | {g.id for g in settings.groups},
            ),
            signing_key_hex=key.get_secret_value() if key else None,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- subscribers ----------------------------------------------------------------

    def subscribe(self, *, max_queue: int | None = None) -> Subscription:
        """A live feed of changes (call from a coroutine); see `gateway.alerts.feed`."""
        return self._feed.subscribe(max_queue=max_queue)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(change)` synchronously after every committed change.

        It runs in the thread that made the change and must be quick (for
        example an insert into a delivery queue); an exception is logged.
        """
        self._listeners.append(listener)

    def _publish(self, change: AlertChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("alert change listener failed", extra={"alert_id": change.alert.id})
        self._feed.publish(change)

    # --- writes ---------------------------------------------------------------------

    def ingest(
        self,
        finding: Finding,
        *,
        site: str,
        evidence_digest: str,
        evidence: Sequence[Reading] | None = None,
    ) -> AlertChange | None:
        """Raise or update the alert for `finding`; None if a maintenance window suppresses it.

        `evidence_digest` is `readings_digest()` of the readings the finding
        cites; it is ledgered with the change. Pass those readings as
        `evidence` to keep them with the alert (the latest finding's set
        replaces the previous one): the evidence bundle then does not depend
        on the reading store's retention or forwarding lag
        (`evidence_readings(id)`). Raises `AlertError` if they do not hash to
        `evidence_digest`.
        """
        snapshot: bytes | None = None
        if evidence is not None:
            if readings_digest(evidence) != evidence_digest:
                raise AlertError(
                    f"finding of detector {finding.detector!r} on device "
                    f"{finding.devices[0] if finding.devices else '?'!r}: the evidence readings "
                    "do not hash to evidence_digest"
                )
            snapshot = encode_readings(evidence)
        if not finding.devices:
            raise AlertError(f"finding of detector {finding.detector!r} names no device")
        if math.isnan(finding.score) or math.isnan(finding.threshold):
            raise AlertError(
                f"finding of detector {finding.detector!r} on device {finding.device!r} "
                "has a NaN score or threshold"
            )
        now = self._clock()
        window = covering(self._maintenance, finding)
        with self._lock:
            try:
                with transaction(self._conn):
                    if window is not None:
                        self._suppress(finding, site, evidence_digest, window, now)
                        return None
                    change = self._ingest_locked(finding, site, evidence_digest, now)
                    if snapshot is not None:
                        self._conn.execute(
                            "INSERT OR REPLACE INTO alert_evidence(alert_id, digest, readings) "
                            "VALUES (?, ?, ?)",
                            (change.alert.id, evidence_digest, snapshot),
                        )
            except BaseException:
                self.ledger.reload()
                raise
        self._publish(change)
        return change

    def _suppress(self, finding: Finding, site: str, digest: str, window: Window, now: int) -> None:
        index = self.ledger.append_in_transaction(
            {
                "type": "finding.suppressed",
                "ts_ns": now,
                "site": site,
                "device": finding.device,
                "detector": finding.detector,
                "reason": window.reason,
                "finding": finding_record(finding),
                "readings_digest": digest,
            }
        )
        self._conn.execute(
            "INSERT INTO suppressed_findings(site, device, detector, ts_ns, window_start_ns, "
            "window_end_ns, evidence_digest, reason, ledger_index) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                site,
                finding.device,
                finding.detector,
                now,
                finding.window_start_ns,
                finding.window_end_ns,
                digest,
                window.reason,
                index,
            ),
        )

    def _ingest_locked(self, finding: Finding, site: str, digest: str, now: int) -> AlertChange:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE device = ? AND detector = ? "  # noqa: S608
            "AND status IN ('open', 'acknowledged')",
            (finding.device, finding.detector),
        ).fetchone()
        numbers = (
            finding.score,
            finding.threshold,
            finding.estimate,
            finding.ci_low,
            finding.ci_high,
            finding.unit,
            finding.explanation,
            finding.window_start_ns,
            finding.window_end_ns,
            digest,
            _details_json(finding.details),
        )
        if row is None:
            kind = ChangeKind.CREATED
            prev = self._conn.execute(
                "SELECT MAX(id) FROM alerts WHERE device = ? AND detector = ?",
                (finding.device, finding.detector),
            ).fetchone()[0]
            cur = self._conn.execute(
                "INSERT INTO alerts(site, device, detector, grp, devices, severity, status, "
                "first_seen_ns, last_seen_ns, updated_ns, count, score, threshold, estimate, "
                "ci_low, ci_high, unit, explanation, window_start_ns, window_end_ns, "
                "evidence_digest, details, previous_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    site,
                    finding.device,
                    finding.detector,
                    finding.group,
                    "\x1f".join(finding.devices),
                    finding.severity.value,
                    AlertStatus.OPEN.value,
                    finding.window_end_ns,
                    finding.window_end_ns,
                    now,
                    1,
                    *numbers,
                    prev,
                ),
            )
            alert_id = int(cur.lastrowid or 0)
        else:
            kind = ChangeKind.UPDATED
            alert_id = int(row[0])
            severity = max(Severity(row[6]), finding.severity, key=lambda s: SEVERITY_RANK[s])
            self._conn.execute(
                "UPDATE alerts SET severity = ?, last_seen_ns = MAX(last_seen_ns, ?), "
                "updated_ns = ?, count = count + 1, devices = ?, grp = ?, score = ?, "
                "threshold = ?, estimate = ?, ci_low = ?, ci_high = ?, unit = ?, "
                "explanation = ?, window_start_ns = ?, window_end_ns = ?, evidence_digest = ?, "
                "details = ? WHERE id = ?",
                (
                    severity.value,
                    finding.window_end_ns,
                    now,
                    "\x1f".join(finding.devices),
                    finding.group,
                    *numbers,
                    alert_id,
                ),
            )
        alert = self._get_locked(alert_id, with_history=False)
        index = self.ledger.append_in_transaction(
            {
                "type": f"alert.{kind.value}",
                "ts_ns": now,
                "alert_id": alert_id,
                "site": site,
                "device": finding.device,
                "detector": finding.detector,
                "who": SYSTEM_ACTOR,
                "status": alert.status.value,
                "severity": alert.severity.value,
                "count": alert.count,
                "previous_id": alert.previous_id,
                "finding": finding_record(finding),
                "readings_digest": digest,
            }
        )
        entry = HistoryEntry(
            kind,
            now,
            SYSTEM_ACTOR,
            None,
            index,
            digest,
            finding.score,
            finding.window_start_ns,
            finding.window_end_ns,
        )
        self._insert_history(alert_id, entry)
        alert = self._get_locked(alert_id, with_history=True)
        return AlertChange(kind, alert, now, SYSTEM_ACTOR, None, index)

    def act(
        self, alert_id: int, action: AlertAction, *, who: str, note: str | None = None
    ) -> Alert:
        """Apply a person's action; returns the alert after it.

        Raises `AlertNotFoundError`, `InvalidTransitionError`, or `AlertError`
        for an empty `who`, a NOTE without text, or an over-long note.
        """
        action = AlertAction(action)
        who = who.strip()
        if not who or len(who) > MAX_WHO_CHARS:
            raise AlertError(f"'who' must be 1..{MAX_WHO_CHARS} characters", alert_id=alert_id)
        if note is not None:
            note = note.strip() or None
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise AlertError(f"note longer than {MAX_NOTE_CHARS} characters", alert_id=alert_id)
        if action is AlertAction.NOTE and note is None:
            raise AlertError("a note action needs a non-empty note", alert_id=alert_id)
        now = self._clock()
        kind = ACTION_CHANGE[action]
        with self._lock:
            try:
                with transaction(self._conn):
                    current = self._get_locked(alert_id, with_history=False)
                    new_status = TRANSITIONS.get((current.status, action))
                    if new_status is None:
                        raise InvalidTransitionError(alert_id, current.status, action)
                    self._conn.execute(
                        "UPDATE alerts SET status = ?, updated_ns = ? WHERE id = ?",
                        (new_status.value, now, alert_id),
                    )
                    index = self.ledger.append_in_transaction(
                        {
                            "type": f"alert.{kind.value}",
                            "ts_ns": now,
                            "alert_id": alert_id,
                            "site": current.site,
                            "device": current.device,
                            "detector": current.detector,
                            "who": who,
                            "note": note,
                            "status": new_status.value,
                            "previous_status": current.status.value,
                        }
                    )
                    self._insert_history(alert_id, HistoryEntry(kind, now, who, note, index))
                    alert = self._get_locked(alert_id, with_history=True)
            except BaseException:
                self.ledger.reload()
                raise
        self._publish(AlertChange(kind, alert, now, who, note, index))
        return alert

    def _insert_history(self, alert_id: int, h: HistoryEntry) -> None:
        self._conn.execute(
            f"INSERT INTO alert_history({_HISTORY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            (
                alert_id,
                h.kind.value,
                h.ts_ns,
                h.who,
                h.note,
                h.ledger_index,
                h.evidence_digest,
                h.score,
                h.window_start_ns,
                h.window_end_ns,
            ),
        )

    # --- reads ----------------------------------------------------------------------

    def get(self, alert_id: int) -> Alert:
        """The alert with its lifecycle history. Raises `AlertNotFoundError`."""
        with self._lock:
            return self._get_locked(alert_id, with_history=True)

    def evidence_readings(self, alert_id: int) -> list[Reading] | None:
        """The readings kept with the alert's latest finding, or None if none were kept.

        They hash to ``get(alert_id).evidence_digest`` unless the kept set
        belongs to an earlier finding (a later one was ingested without
        `evidence`); compare the digest before use.
        """
        with self._lock:
            self._get_locked(alert_id, with_history=False)
            row = self._conn.execute(
                "SELECT readings FROM alert_evidence WHERE alert_id = ?", (alert_id,)
            ).fetchone()
        return None if row is None else decode_readings(bytes(row[0]))

    def history(self, alert_id: int) -> list[HistoryEntry]:
        """Every history entry of the alert, oldest first, UPDATED merges included."""
        with self._lock:
            self._get_locked(alert_id, with_history=False)
            rows = self._conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM alert_history "  # noqa: S608
                "WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            ).fetchall()
        return [_history_from_row(r) for r in rows]

    def query(
        self,
        *,
        status: AlertStatus | Collection[AlertStatus] | None = None,
        severity: Severity | None = None,
        detector: str | None = None,
        site: str | None = None,
        sites: Collection[str] | None = None,
        device: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Alerts matching every given filter, newest (highest id) first.

        `sites` is the caller's allowed sites (``"*"`` in it allows all; an
        empty collection allows none); `site` narrows further. `since_ns`/
        `until_ns` select alerts seen in that interval (``last_seen_ns >=
        since_ns`` and ``first_seen_ns <= until_ns``). `cursor` is the
        previous page's `next_cursor`.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQueryError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = (
                [AlertStatus(status)]
                if isinstance(status, str)
                else [AlertStatus(s) for s in status]
            )
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += [s.value for s in statuses]
            if not statuses:
                where.append("0")
        if severity is not None:
            where.append("severity = ?")
            params.append(Severity(severity).value)
        for column, value in (("detector", detector), ("site", site), ("device", device)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if sites is not None and "*" not in sites:
            allowed = sorted(set(sites))
            where.append(f"site IN ({','.join('?' * len(allowed))})" if allowed else "0")
            params += allowed
        if since_ns is not None:
            where.append("last_seen_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("first_seen_ns <= ?")
            params.append(until_ns)
        if cursor is not None:
            where.append("id < ?")
            params.append(_decode_cursor(cursor))
        sql = f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit + 1)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            histories = self._histories_locked([int(r[0]) for r in rows])
        items = tuple(_alert_from_row(r, histories.get(int(r[0]), ())) for r in rows)
        return Page(items, _encode_cursor(items[-1].id) if more and items else None)

    def counts(self, *, sites: Collection[str] | None = None) -> dict[AlertStatus, int]:
        """Number of alerts per status (for metrics and the dashboard)."""
        sql = "SELECT status, COUNT(*) FROM alerts"
        params: list[str] = []
        if sites is not None and "*" not in sites:
            allowed = sorted(set(sites))
            sql += f" WHERE site IN ({','.join('?' * len(allowed))})" if allowed else " WHERE 0"
            params = allowed
        sql += " GROUP BY status"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        out = dict.fromkeys(AlertStatus, 0)
        out.update({AlertStatus(s): int(n) for s, n in rows})
        return out

    def suppressed(self, *, limit: int = 100) -> list[SuppressedFinding]:
        """The most recent findings suppressed by maintenance windows, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, site, device, detector, ts_ns, window_start_ns, window_end_ns, "
                "evidence_digest, reason, ledger_index FROM suppressed_findings "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [SuppressedFinding(*r) for r in rows]

    def _get_locked(self, alert_id: int, *, with_history: bool) -> Alert:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE id = ?",  # noqa: S608
            (alert_id,),
        ).fetchone()
        if row is None:
            raise AlertNotFoundError(alert_id)
        history = self._histories_locked([alert_id]).get(alert_id, ()) if with_history else ()
        return _alert_from_row(row, history)

    def _histories_locked(self, ids: Sequence[int]) -> dict[int, tuple[HistoryEntry, ...]]:
        if not ids:
            return {}
        out: dict[int, list[HistoryEntry]] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            rows = self._conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM alert_history "  # noqa: S608
                f"WHERE alert_id IN ({','.join('?' * len(chunk))}) AND kind != ? ORDER BY id",
                [*chunk, ChangeKind.UPDATED.value],
            ).fetchall()
            for r in rows:
                out.setdefault(int(r[0]), []).append(_history_from_row(r))
        return {k: tuple(v) for k, v in out.items()}

    # --- asyncio wrappers (run the call in a worker thread) ------------------------

    async def aingest(
        self,
        finding: Finding,
        *,
        site: str,
        evidence_digest: str,
        evidence: Sequence[Reading] | None = None,
    ) -> AlertChange | None:
        return await asyncio.to_thread(
            self.ingest, finding, site=site, evidence_digest=evidence_digest, evidence=evidence
        )

    async def aevidence_readings(self, alert_id: int) -> list[Reading] | None:
        return await asyncio.to_thread(self.evidence_readings, alert_id)

    async def aact(
        self, alert_id: int, action: AlertAction, *, who: str, note: str | None = None
    ) -> Alert:
        return await asyncio.to_thread(self.act, alert_id, action, who=who, note=note)

    async def aget(self, alert_id: int) -> Alert:
        return await asyncio.to_thread(self.get, alert_id)

    async def ahistory(self, alert_id: int) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.history, alert_id)

    async def aquery(self, **filters: Any) -> Page:
        """`query(**filters)` in a worker thread (same keyword arguments)."""
        return await asyncio.to_thread(lambda: self.query(**filters))


def _details_json(details: Mapping[str, float]) -> str:
    return json.dumps({k: _num(float(v)) for k, v in sorted(details.items())})


def _alert_from_row(row: Sequence[Any], history: tuple[HistoryEntry, ...]) -> Alert:
    details_raw = json.loads(row[22])
    details = {k: float(v) for k, v in details_raw.items()}
    return Alert(
        id=int(row[0]),
        site=row[1],
        device=row[2],
        detector=row[3],
        group=row[4],
        devices=tuple(row[5].split("\x1f")),
        severity=Severity(row[6]),
        status=AlertStatus(row[7]),
        first_seen_ns=row[8],
        last_seen_ns=row[9],
        updated_ns=row[10],
        count=row[11],
        score=row[12],
        threshold=row[13],
        estimate=row[14],
        ci_low=row[15],
        ci_high=row[16],
        unit=row[17],
        explanation=row[18],
        window_start_ns=row[19],
        window_end_ns=row[20],
        evidence_digest=row[21],
        details=details,
        previous_id=row[23],
        history=history,
    )


def _history_from_row(row: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(
        kind=ChangeKind(row[1]),
        ts_ns=row[2],
        who=row[3],
        note=row[4],
        ledger_index=row[5],
        evidence_digest=row[6],
        score=row[7],
        window_start_ns=row[8],
        window_end_ns=row[9],
    )
