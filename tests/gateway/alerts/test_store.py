"""AlertStore: dedup, lifecycle, reopen, suppression, queries, restarts, ledger wiring, feed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from anomaly.finding import Finding, Severity
from gateway.alerts import (
    AlertAction,
    AlertError,
    AlertNotFoundError,
    AlertStatus,
    AlertStore,
    ChangeKind,
    InvalidQueryError,
    InvalidTransitionError,
    MaintenanceConfigError,
    parse_windows,
)
from gateway.config import MaintenanceWindow

T0 = 1_764_300_000_000_000_000  # 2025-11-28T03:20:00Z
MIN = 60_000_000_000
DIGEST = "ab" * 32


def finding(
    device: str = "n1",
    detector: str = "reconciliation.tank_nozzle_error",
    *,
    t: int = T0,
    score: float = 3.0,
    severity: Severity = Severity.WARNING,
) -> Finding:
    return Finding(
        detector=detector,
        devices=(device, "tank1"),
        score=score,
        threshold=1.0,
        window_start_ns=t - 10 * MIN,
        window_end_ns=t,
        explanation=f"{device} over-registers",
        severity=severity,
        group="tank1",
        estimate=0.8,
        ci_low=0.6,
        ci_high=1.0,
        unit="%",
        details={"sales_l": 1200.0},
    )


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    s = AlertStore(tmp_path / "alerts.sqlite")
    yield s  # type: ignore[misc]
    s.close()


def test_repeated_finding_updates_one_alert(store: AlertStore) -> None:
    first = store.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert first is not None and first.kind is ChangeKind.CREATED
    second = store.ingest(
        finding(t=T0 + MIN, score=5.0, severity=Severity.CRITICAL),
        site="s1",
        evidence_digest="cd" * 32,
    )
    third = store.ingest(finding(t=T0 + 2 * MIN, score=4.0), site="s1", evidence_digest=DIGEST)
    assert second is not None and third is not None
    assert second.kind is third.kind is ChangeKind.UPDATED
    assert second.alert.id == third.alert.id == first.alert.id
    alert = store.get(first.alert.id)
    assert alert.count == 3
    assert alert.score == 4.0  # the latest finding's numbers
    assert alert.severity is Severity.CRITICAL  # the highest seen
    assert alert.first_seen_ns == T0 and alert.last_seen_ns == T0 + 2 * MIN
    assert [h.kind for h in alert.history] == [ChangeKind.CREATED]
    full = store.history(alert.id)
    assert [h.kind for h in full] == [ChangeKind.CREATED, ChangeKind.UPDATED, ChangeKind.UPDATED]
    assert full[1].evidence_digest == "cd" * 32
    # another detector or device is another alert
    other = store.ingest(
        finding(detector="integrity.counter_rollback"), site="s1", evidence_digest=DIGEST
    )
    assert other is not None and other.alert.id != alert.id


def test_lifecycle_and_invalid_transitions(store: AlertStore) -> None:
    change = store.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert change is not None
    aid = change.alert.id
    acked = store.act(aid, AlertAction.ACKNOWLEDGE, who="inspector.li", note="looking")
    assert acked.status is AlertStatus.ACKNOWLEDGED
    with pytest.raises(InvalidTransitionError, match="acknowledged; cannot acknowledge") as exc:
        store.act(aid, AlertAction.ACKNOWLEDGE, who="inspector.li")
    assert exc.value.alert_id == aid
    # merging while acknowledged keeps the status
    upd = store.ingest(finding(t=T0 + MIN), site="s1", evidence_digest=DIGEST)
    assert upd is not None and upd.alert.status is AlertStatus.ACKNOWLEDGED
    noted = store.act(aid, AlertAction.NOTE, who="inspector.li", note="seal broken")
    resolved = store.act(aid, AlertAction.RESOLVE, who="inspector.li", note="recalibrated")
    assert noted.status is AlertStatus.ACKNOWLEDGED and resolved.status is AlertStatus.RESOLVED
    assert [(h.kind, h.who, h.note) for h in resolved.history] == [
        (ChangeKind.CREATED, "meterwatch", None),
        (ChangeKind.ACKNOWLEDGED, "inspector.li", "looking"),
        (ChangeKind.NOTED, "inspector.li", "seal broken"),
        (ChangeKind.RESOLVED, "inspector.li", "recalibrated"),
    ]
    for action in (AlertAction.ACKNOWLEDGE, AlertAction.RESOLVE, AlertAction.DISMISS):
        with pytest.raises(InvalidTransitionError):
            store.act(aid, action, who="x")
    with pytest.raises(AlertError, match="needs a non-empty note"):
        store.act(aid, AlertAction.NOTE, who="x", note="  ")
    with pytest.raises(AlertError, match="'who'"):
        store.act(aid, AlertAction.NOTE, who="", note="n")
    with pytest.raises(AlertNotFoundError, match="alert 999 does not exist"):
        store.act(999, AlertAction.ACKNOWLEDGE, who="x")
    with pytest.raises(AlertNotFoundError):
        store.get(999)


def test_recurrence_after_resolve_or_dismiss_is_a_new_alert(store: AlertStore) -> None:
    a = store.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert a is not None
    store.act(a.alert.id, AlertAction.DISMISS, who="insp", note="false positive")
    b = store.ingest(finding(t=T0 + MIN), site="s1", evidence_digest=DIGEST)
    assert b is not None and b.kind is ChangeKind.CREATED
    assert b.alert.id != a.alert.id and b.alert.previous_id == a.alert.id
    assert store.get(a.alert.id).status is AlertStatus.DISMISSED
    assert b.alert.status is AlertStatus.OPEN


def test_survives_restart_and_ledgers_every_change(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    s = AlertStore(path)
    c = s.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert c is not None
    s.act(c.alert.id, AlertAction.ACKNOWLEDGE, who="insp")
    root = s.ledger.root()
    s.close()
    s2 = AlertStore(path)
    assert s2.get(c.alert.id).status is AlertStatus.ACKNOWLEDGED
    assert s2.ledger.size == 2 and s2.ledger.root() == root
    # still one active alert per device+detector after the restart
    again = s2.ingest(finding(t=T0 + MIN), site="s1", evidence_digest=DIGEST)
    assert again is not None and again.alert.id == c.alert.id
    entries = [e.record for e in s2.ledger.entries()]
    assert [e["type"] for e in entries] == ["alert.created", "alert.acknowledged", "alert.updated"]
    assert entries[0]["readings_digest"] == DIGEST and entries[1]["who"] == "insp"
    assert [h.ledger_index for h in s2.history(c.alert.id)] == [0, 1, 2]
    assert s2.ledger.verify().ok
    s2.close()


def test_failed_action_writes_nothing_to_the_ledger(store: AlertStore) -> None:
    c = store.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert c is not None
    store.act(c.alert.id, AlertAction.RESOLVE, who="insp")
    size = store.ledger.size
    with pytest.raises(InvalidTransitionError):
        store.act(c.alert.id, AlertAction.ACKNOWLEDGE, who="insp")
    assert store.ledger.size == size
    assert store.ledger.verify().ok


def test_the_database_refuses_a_second_active_alert(store: AlertStore) -> None:
    c = store.ingest(finding(), site="s1", evidence_digest=DIGEST)
    assert c is not None
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO alerts SELECT NULL, site, device, detector, grp, devices, severity, "
            "status, first_seen_ns, last_seen_ns, updated_ns, count, score, threshold, estimate,"
            " ci_low, ci_high, unit, explanation, window_start_ns, window_end_ns, "
            "evidence_digest, details, previous_id FROM alerts"
        )
    conn.close()


def test_maintenance_window_suppresses_and_records(tmp_path: Path) -> None:
    windows = parse_windows(
        [
            MaintenanceWindow(
                device="n1",
                start="2025-11-28T03:00:00Z",
                end="2025-11-28T04:00:00Z",
                reason="pump swap",
            ),
            MaintenanceWindow(device="*", start="2025-11-29T09:00", end="2025-11-29T10:00"),
        ],
        timezone="Europe/Berlin",
    )
    assert windows[1].start_ns == T0 + (29 * 60 + 40) * MIN - 60 * MIN  # 08:00Z, Berlin is +1
    s = AlertStore(tmp_path / "a.sqlite", maintenance=windows)
    assert s.ingest(finding(t=T0), site="s1", evidence_digest=DIGEST) is None
    assert s.ingest(finding("n2", t=T0), site="s1", evidence_digest=DIGEST) is not None
    assert s.ingest(finding(t=T0 + 60 * MIN), site="s1", evidence_digest=DIGEST) is not None
    sup = s.suppressed()
    assert len(sup) == 1 and sup[0].device == "n1" and sup[0].reason == "pump swap"
    assert s.ledger.entry(sup[0].ledger_index).record["type"] == "finding.suppressed"
    assert s.query().items[-1].device == "n2"
    s.close()


def test_maintenance_config_errors_name_the_path() -> None:
    # the config model already refuses a non-ISO time (check-config reports it) ...
    with pytest.raises(ValidationError, match="not an ISO 8601 date-time"):
        MaintenanceWindow(device="*", start="tomorrow", end="2025-01-01T00:00Z")
    # ... and parse_windows names the path for what only it can check
    with pytest.raises(MaintenanceConfigError, match=r"alerts.maintenance\[1\].end: must be after"):
        parse_windows(
            [
                MaintenanceWindow(device="*", start="2025-01-01T00:00Z", end="2025-01-02T00:00Z"),
                MaintenanceWindow(device="*", start="2025-01-02T00:00Z", end="2025-01-01T00:00Z"),
            ]
        )
    unchecked = MaintenanceWindow.model_construct(device="*", start="soon", end="later")
    with pytest.raises(MaintenanceConfigError, match=r"alerts.maintenance\[0\].start"):
        parse_windows([unchecked])
    with pytest.raises(
        MaintenanceConfigError, match=r"\[0\]\.device: no device or group named 'n9'"
    ):
        parse_windows(
            [MaintenanceWindow(device="n9", start="2025-01-01T00:00Z", end="2025-01-02T00:00Z")],
            known={"n1", "tank1"},
        )
    with pytest.raises(MaintenanceConfigError, match=r"site\.timezone"):
        parse_windows([], timezone="Mars/Olympus")


def test_query_filters_sites_and_pagination(store: AlertStore) -> None:
    ids = []
    for i in range(7):
        c = store.ingest(
            finding(
                f"d{i}", t=T0 + i * MIN, severity=Severity.CRITICAL if i % 2 else Severity.WARNING
            ),
            site="s1" if i < 4 else "s2",
            evidence_digest=DIGEST,
        )
        assert c is not None
        ids.append(c.alert.id)
    store.act(ids[0], AlertAction.ACKNOWLEDGE, who="x")
    assert [a.id for a in store.query().items] == ids[::-1]
    assert [a.id for a in store.query(sites=["s2"]).items] == ids[4:][::-1]
    assert store.query(sites=[]).items == ()
    assert len(store.query(sites=["*"]).items) == 7
    assert [a.id for a in store.query(site="s1", sites=["s2"]).items] == []
    assert [a.id for a in store.query(status=AlertStatus.ACKNOWLEDGED).items] == [ids[0]]
    assert len(store.query(severity=Severity.CRITICAL).items) == 3
    assert [a.id for a in store.query(device="d3").items] == [ids[3]]
    assert len(store.query(since_ns=T0 + 5 * MIN).items) == 2
    assert len(store.query(until_ns=T0 + MIN).items) == 2
    assert store.query(detector="nope").items == ()
    # pagination walks every alert exactly once, even with writes in between
    seen: list[int] = []
    cursor = None
    while True:
        page = store.query(limit=3, cursor=cursor)
        seen += [a.id for a in page.items]
        store.ingest(finding("d0", t=T0 + 99 * MIN), site="s1", evidence_digest=DIGEST)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    with pytest.raises(InvalidQueryError, match="invalid cursor"):
        store.query(cursor="!!garbage")
    with pytest.raises(InvalidQueryError, match="limit"):
        store.query(limit=0)
    assert store.counts()[AlertStatus.OPEN] == 6
    assert store.counts(sites=["s2"])[AlertStatus.ACKNOWLEDGED] == 0


def test_hostile_strings_are_bound_not_interpolated(store: AlertStore) -> None:
    evil = "x'); DROP TABLE alerts; --"
    c = store.ingest(finding(evil, detector=evil), site=evil, evidence_digest=DIGEST)
    assert c is not None
    assert [a.device for a in store.query(device=evil, site=evil, detector=evil).items] == [evil]


def test_bad_finding_is_a_clear_error(store: AlertStore) -> None:
    with pytest.raises(AlertError, match="NaN score"):
        store.ingest(finding(score=float("nan")), site="s1", evidence_digest=DIGEST)
    c = store.ingest(finding(score=float("inf")), site="s1", evidence_digest=DIGEST)
    assert c is not None and c.alert.score == float("inf")
    assert store.ledger.entry(c.ledger_index).record["finding"]["score"] == "inf"


async def test_feed_fans_out_and_async_wrappers(store: AlertStore) -> None:
    async with store.subscribe() as a, store.subscribe() as b:
        c = await store.aingest(finding(), site="s1", evidence_digest=DIGEST)
        assert c is not None
        await store.aact(c.alert.id, AlertAction.ACKNOWLEDGE, who="insp")
        for sub in (a, b):
            first = await asyncio.wait_for(anext(sub), 10)
            second = await asyncio.wait_for(anext(sub), 10)
            assert (first.kind, second.kind) == (ChangeKind.CREATED, ChangeKind.ACKNOWLEDGED)
            assert second.alert.status is AlertStatus.ACKNOWLEDGED and second.who == "insp"
        page = await store.aquery(status=AlertStatus.ACKNOWLEDGED)
        assert [x.id for x in page.items] == [c.alert.id]
        assert (await store.aget(c.alert.id)).id == c.alert.id


async def test_slow_subscriber_is_cut_off_and_never_blocks_ingest(store: AlertStore) -> None:
    slow = store.subscribe(max_queue=3)
    fast = store.subscribe(max_queue=100)
    received: list[int] = []

    async def drain() -> None:
        async for change in fast:
            received.append(change.alert.id)

    task = asyncio.create_task(drain())

    # ingest from another thread, as the pipeline does, while nobody reads `slow`
    def produce() -> None:
        for i in range(10):
            store.ingest(finding(f"d{i}"), site="s1", evidence_digest=DIGEST)

    thread = threading.Thread(target=produce)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    for _ in range(1000):
        if len(received) == 10:
            break
        await asyncio.sleep(0.01)
    assert len(received) == 10
    got = [change async for change in slow]  # ends after the changes it kept
    assert slow.lagged and len(got) == 3
    fast.close()
    await asyncio.wait_for(task, 10)


def test_from_settings(tmp_path: Path) -> None:
    from gateway.config import parse_config

    settings = parse_config(
        {
            "site": {"id": "s1", "timezone": "Europe/Berlin"},
            "storage": {"data_dir": str(tmp_path / "data")},
            "alerts": {
                "maintenance": [
                    {"device": "*", "start": "2025-11-28T04:00", "end": "2025-11-28T05:00"}
                ]
            },
        }
    )
    store = AlertStore.from_settings(settings)
    assert store.path == tmp_path / "data" / "alerts.sqlite"
    # 03:20Z is 04:20 in Berlin: inside the window
    assert store.ingest(finding(t=T0), site="s1", evidence_digest=DIGEST) is None
    store.close()
