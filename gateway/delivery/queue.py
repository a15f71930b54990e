"""A small durable FIFO of outgoing alert messages per target, in SQLite (WAL).

A message is committed to disk before the alert change that caused it is
considered delivered anywhere, and removed only after the target confirmed
it (HTTP 2xx, MQTT PUBACK), so a restart or an outage loses nothing
(delivery is at least once; receivers deduplicate on the delivery id). Each
target is strictly ordered: its oldest pending message is retried with
backoff and holds the ones behind it. A message older than ``max_age_s``
that still fails is marked dead (kept in the table, counted in `stats()`).

Failure modes handled: a missing directory (created), concurrent writers
(one lock; SQLite busy timeout), a crash between taking and confirming a
message (it is simply sent again).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    uid TEXT NOT NULL,
    event TEXT NOT NULL,
    topic TEXT,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(target, state, id);
"""


@dataclass(frozen=True, slots=True)
class Message:
    """A message to queue (see `DeliveryQueue.put_many`)."""

    target: str
    uid: str
    event: str
    payload: bytes
    topic: str | None = None
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending message. `uid` is stable across retries (the receiver's dedup key)."""

    id: int
    target: str
    uid: str
    event: str
    topic: str | None
    payload: bytes
    retain: bool
    created_ns: int
    attempts: int
    next_attempt_ns: int


class DeliveryQueue:
    """Durable per-target FIFO. Methods are synchronous, thread-safe and fast (one commit)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def put(
        self,
        target: str,
        *,
        uid: str,
        event: str,
        payload: bytes,
        now_ns: int,
        topic: str | None = None,
        retain: bool = False,
    ) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO deliveries(target, uid, event, topic, payload, retain, created_ns, "
                "next_attempt_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (target, uid, event, topic, payload, int(retain), now_ns, now_ns),
            )
            return int(cur.lastrowid or 0)

    def put_many(self, messages: Sequence[Message], *, now_ns: int) -> None:
        """Queue several messages in one transaction (one fsync)."""
        if not messages:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO deliveries(target, uid, event, topic, payload, retain, "
                    "created_ns, next_attempt_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.target,
                            m.uid,
                            m.event,
                            m.topic,
                            m.payload,
                            int(m.retain),
                            now_ns,
                            now_ns,
                        )
                        for m in messages
                    ],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def head(self, target: str) -> Delivery | None:
        """The oldest pending message of `target` (due or not)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, target, uid, event, topic, payload, retain, created_ns, attempts, "
                "next_attempt_ns FROM deliveries WHERE target = ? AND state = 'pending' "
                "ORDER BY id LIMIT 1",
                (target,),
            ).fetchone()
        if row is None:
            return None
        return Delivery(
            row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bool(row[6]), *row[7:]
        )

    def done(self, delivery_id: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def retry(self, delivery_id: int, *, next_attempt_ns: int, error: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_ns = ?, "
                "last_error = ? WHERE id = ?",
                (next_attempt_ns, error[:500], delivery_id),
            )

    def dead(self, delivery_id: int, *, error: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, state = 'dead', last_error = ? "
                "WHERE id = ?",
                (error[:500], delivery_id),
            )

    def stats(self) -> dict[str, dict[str, int]]:
        """``{target: {"pending": n, "dead": m}}`` for metrics and health."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT target, state, COUNT(*) FROM deliveries GROUP BY target, state"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for target, state, n in rows:
            out.setdefault(target, {"pending": 0, "dead": 0})[state] = int(n)
        return out
