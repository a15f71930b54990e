"""Evidence kept with alerts, and FindingIntake (the pipeline's on_findings stage)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from anomaly.finding import Finding
from drivers.reading import DeviceKind, Reading
from gateway.alerts import AlertError, AlertStore, FindingIntake
from gateway.evidence import build_bundle, readings_digest
from gateway.evidence.verify_bundle import Bundle, check

T0 = 1_764_300_000_000_000_000
S = 1_000_000_000


def finding(start: int = T0, end: int = T0 + 100 * S) -> Finding:
    return Finding("behaviour.flow_rate", ("n1", "n2"), 5.0, 3.5, start, end, "flow rate up 4 %")


def readings() -> list[Reading]:
    out = []
    for dev in ("n1", "n2", "n3"):
        for i in range(-10, 120, 10):
            fields = {"volume_l": 1.5 * i, "flow_l_min": math.nan if i == 50 else 36.0}
            out.append(Reading(dev, DeviceKind.DISPENSER_NOZZLE, T0 + i * S, 100 + i, fields))
    return out


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    s = AlertStore(tmp_path / "alerts.sqlite")
    yield s  # type: ignore[misc]
    s.close()


def test_evidence_is_kept_checked_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    store = AlertStore(path)
    rs = readings()[:5]
    with pytest.raises(AlertError, match="do not hash to evidence_digest"):
        store.ingest(finding(), site="s1", evidence_digest="00" * 32, evidence=rs)
    assert store.ledger.size == 0
    c = store.ingest(finding(), site="s1", evidence_digest=readings_digest(rs), evidence=rs)
    assert c is not None
    store.close()
    store = AlertStore(path)  # kept across restarts
    kept = store.evidence_readings(c.alert.id)
    assert kept is not None and readings_digest(kept) == c.alert.evidence_digest
    assert [(r.device_id, r.seq, r.kind) for r in kept] == [
        (r.device_id, r.seq, r.kind) for r in rs
    ]
    assert math.isnan(kept[5 - 1].fields["flow_l_min"]) == math.isnan(rs[4].fields["flow_l_min"])
    newer = readings()[5:9]
    store.ingest(finding(), site="s1", evidence_digest=readings_digest(newer), evidence=newer)
    kept = store.evidence_readings(c.alert.id)
    assert kept is not None and readings_digest(kept) == readings_digest(newer)
    other = store.ingest(
        Finding("x.y", ("m1",), 2.0, 1.0, T0, T0, "x"), site="s1", evidence_digest="ab" * 32
    )
    assert other is not None and store.evidence_readings(other.alert.id) is None
    store.close()


async def test_intake_cites_the_window_and_the_bundle_verifies(
    store: AlertStore, tmp_path: Path
) -> None:
    asked: list[Finding] = []

    async def fetch(f: Finding) -> Sequence[Reading]:
        asked.append(f)
        return readings()  # more than the window: other device, before and after

    intake = FindingIntake(store, readings_for=fetch, site_of=lambda f: "s1")
    await intake([finding()])
    (alert,) = store.query().items
    kept = store.evidence_readings(alert.id)
    assert kept is not None
    assert {r.device_id for r in kept} == {"n1", "n2"}
    assert min(r.ts_ns for r in kept) == T0 and max(r.ts_ns for r in kept) == T0 + 100 * S
    assert len(kept) == 2 * 11 and asked == [finding()]
    # the bundle built from the kept readings verifies end to end (the shipped checks)
    zip_path = tmp_path / "bundle.zip"
    zip_path.write_bytes(build_bundle(alert, store.history(alert.id), kept, store.ledger))
    assert check(Bundle(zip_path)) == []


async def test_intake_raises_the_alert_when_readings_cannot_be_read(
    store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(f: Finding) -> Sequence[Reading]:
        raise ConnectionError("influxdb down")

    intake = FindingIntake(store, readings_for=broken, site_of=lambda f: "s1")
    await intake([finding(), finding(end=T0 + 200 * S)])
    (alert,) = store.query().items
    assert alert.count == 2 and alert.evidence_digest == readings_digest([])
    assert store.evidence_readings(alert.id) == []
    assert sum("cannot read the readings" in r.getMessage() for r in caplog.records) == 1


async def test_intake_logs_a_bad_finding_and_goes_on(
    store: AlertStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def fetch(f: Finding) -> Sequence[Reading]:
        return []

    bad = Finding("x.nan", ("n1",), math.nan, 1.0, T0, T0, "broken detector")
    intake = FindingIntake(store, readings_for=fetch, site_of=lambda f: "s1")
    await intake([bad, finding()])
    assert intake.failures == 1 and intake.changes == 1
    assert any("NaN score" in r.getMessage() for r in caplog.records)
