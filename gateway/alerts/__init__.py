"""Alerts: findings with a lifecycle, deduplicated, ledgered, with a live change feed.

Public API (stable; the HTTP API and the pipeline code against it)::

    from gateway.alerts import (Alert, AlertAction, AlertChange, AlertStatus, AlertStore,
                                ChangeKind, HistoryEntry, Page, Subscription, ...errors)

    store = AlertStore(path, *, maintenance: Sequence[Window] = (),
                       signing_key_hex: str | None = None, feed_queue_size=256,
                       clock=now_ns)
    store = AlertStore.from_settings(settings, *, path=None)   # <data_dir>/alerts.sqlite
    store.ledger                                   # gateway.ledger.Ledger, same SQLite file
    store.close()

    # synchronous, thread-safe; each write is one fsync'ed transaction
    store.ingest(finding, *, site: str, evidence_digest: str,
                 evidence: Sequence[Reading] | None = None) -> AlertChange | None
    store.evidence_readings(alert_id: int) -> list[Reading] | None  # kept with the alert
    store.act(alert_id: int, action: AlertAction, *, who: str, note: str | None = None) -> Alert
    store.get(alert_id: int) -> Alert                     # with lifecycle history
    store.history(alert_id: int) -> list[HistoryEntry]    # all entries incl. UPDATED merges
    store.query(*, status=None, severity=None, detector=None, site=None, sites=None,
                device=None, since_ns=None, until_ns=None, limit=100, cursor=None) -> Page
    store.counts(*, sites=None) -> dict[AlertStatus, int]
    store.suppressed(*, limit=100) -> list[SuppressedFinding]
    store.add_listener(fn: Callable[[AlertChange], None]) -> None   # sync, after commit

    # asyncio: the same calls in a worker thread
    await store.aingest(...), store.aact(...), store.aget(id), store.ahistory(id),
    await store.aevidence_readings(id), store.aquery(**same keywords as query)

    # the pipeline's on_findings: fetch the cited readings, keep them, digest, ingest
    intake = FindingIntake(store, *, readings_for: async (Finding) -> Sequence[Reading],
                           site_of: (Finding) -> str, timeout_s=30.0)
    await intake(findings)

    # live feed (call inside a coroutine); bounded per subscriber, never blocks ingest
    async with store.subscribe(max_queue=None) as sub:
        async for change in sub: ...          # AlertChange; ends if the reader lags

Errors (all `AlertError`, with `.alert_id`): `AlertNotFoundError` (-> 404),
`InvalidTransitionError` (-> 409; `.status`, `.action`), `InvalidQueryError`
(bad cursor or limit -> 400/422), `MaintenanceConfigError` (`.path`).

Lifecycle: OPEN -acknowledge-> ACKNOWLEDGED; OPEN or ACKNOWLEDGED -resolve->
RESOLVED, -dismiss-> DISMISSED; NOTE in any status (needs a note). RESOLVED
and DISMISSED are final; a recurring finding then raises a new alert with
`previous_id` set. All records have `to_dict()` giving the JSON shape.
"""

from gateway.alerts.feed import ChangeFeed, Subscription
from gateway.alerts.intake import FindingIntake
from gateway.alerts.maintenance import Window, parse_windows
from gateway.alerts.model import (
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
    MaintenanceConfigError,
    Page,
    SuppressedFinding,
)
from gateway.alerts.store import MAX_LIMIT, AlertStore, finding_record

__all__ = [
    "MAX_LIMIT",
    "TRANSITIONS",
    "Alert",
    "AlertAction",
    "AlertChange",
    "AlertError",
    "AlertNotFoundError",
    "AlertStatus",
    "AlertStore",
    "ChangeFeed",
    "ChangeKind",
    "FindingIntake",
    "HistoryEntry",
    "InvalidQueryError",
    "InvalidTransitionError",
    "MaintenanceConfigError",
    "Page",
    "Subscription",
    "SuppressedFinding",
    "Window",
    "finding_record",
    "parse_windows",
]
