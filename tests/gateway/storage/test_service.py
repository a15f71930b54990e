"""open_storage end to end (embedded and InfluxDB v1), forwarder failure handling,
metrics/health, and the embedded store's retention and roll-ups."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from drivers.reading import DeviceKind, Reading
from gateway.config import StorageSettings
from gateway.storage import (
    Backoff,
    EmbeddedStore,
    EntryKind,
    Forwarder,
    ForwarderState,
    InfluxV1Store,
    Outbox,
    ReadingEncoder,
    Storage,
    open_storage,
)
from gateway.storage.lineprotocol import encode_point
from tests.gateway.storage.conftest import BASE_NS, HOUR_NS, influxql
from tests.services import InfluxService

DAY_NS = 24 * HOUR_NS


def _readings(device: str, n: int, start_ns: int = BASE_NS) -> list[Reading]:
    return [
        Reading(
            device,
            DeviceKind.WATER,
            start_ns + i * 10**9,
            i,
            {"volume_forward_m3": 100 + i * 0.01, "flow_m3h": 0.6},
        )
        for i in range(n)
    ]


async def _run_until_empty(storage: Storage, timeout_s: float = 20) -> None:
    task = asyncio.create_task(storage.run(), name="storage")
    try:
        deadline = time.monotonic() + timeout_s
        while storage.outbox.stats().entries:
            assert time.monotonic() < deadline, storage.metrics()
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_open_storage_embedded_end_to_end(tmp_path: Path) -> None:
    settings = StorageSettings(data_dir=tmp_path, outbox_max_mb=1)
    storage = await open_storage(settings, site_id="site-1", device_profiles={"w1": "water_meter"})
    assert isinstance(storage.store, EmbeddedStore)
    result = await storage.append(_readings("w1", 100)[:60])
    assert result.points == 60
    await storage.persist(_readings("w1", 100)[60:])  # the pipeline's callback
    await storage.outbox.append_lines(
        EntryKind.ALERT,
        [encode_point("meterwatch_alerts", {"device": "w1"}, {"detector": "x"}, BASE_NS)],
    )
    m = storage.metrics()
    assert (m["outbox_points"], m["outbox_entries"], m["appended_points"]) == (101, 3, 101)
    await _run_until_empty(storage)
    m = storage.metrics()
    assert m["outbox_points"] == 0 and m["written_points"] == 101 and m["write_rate_pps"] > 0
    assert storage.health()["status"] == "ok"
    registry = CollectorRegistry()
    registry.register(storage.collector())
    text = generate_latest(registry).decode()
    assert 'meterwatch_storage_written_points_total{backend="embedded",site="site-1"} 101.0' in text
    assert "meterwatch_outbox_dropped_points_total" in text
    assert "meterwatch_outbox_oldest_age_seconds" in text
    await storage.close()

    again = await open_storage(settings, site_id="site-1")
    got = await again.store.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert got.seq == list(range(100))
    await again.close()


@pytest.mark.integration
async def test_open_storage_influx_v1_forwards_readings_and_alerts(
    tmp_path: Path, influxdb: InfluxService
) -> None:
    db = f"svc_{uuid.uuid4().hex[:8]}"
    settings = StorageSettings.model_validate(
        {
            "backend": "influxdb_v1",
            "data_dir": str(tmp_path),
            "influxdb": {"url": influxdb.url, "database": db, "batch_size": 64},
        }
    )
    storage = await open_storage(settings, site_id="site-1", device_profiles={"w1": "water_meter"})
    for first in range(0, 300, 50):
        await storage.append(_readings("w1", 300)[first : first + 50])
    await storage.outbox.append_lines(
        EntryKind.ALERT,
        [
            encode_point(
                "meterwatch_alerts",
                {"site": "site-1", "device": "w1"},
                {"detector": "integrity.counter_rollback", "score": 3.5},
                BASE_NS,
            )
        ],
    )
    await _run_until_empty(storage)
    assert storage.metrics()["write_batches"] >= 5  # batched by batch_size (whole entries)
    got = await storage.store.query(
        "w1",
        fields=["flow_m3h"],
        start_ns=BASE_NS,
        end_ns=BASE_NS + HOUR_NS,
        every_s=60,
        agg="mean",
    )
    assert got.columns["flow_m3h"] == pytest.approx([0.6] * 5)
    answer = influxql(influxdb.url, db, 'SELECT "detector" FROM "meterwatch_alerts"')
    assert answer["results"][0]["series"][0]["values"] == [[BASE_NS, "integrity.counter_rollback"]]
    profiles = influxql(influxdb.url, db, 'SHOW TAG VALUES FROM "water" WITH KEY = "profile"')
    assert profiles["results"][0]["series"][0]["values"] == [["profile", "water_meter"]]
    await storage.close()


@pytest.mark.integration
async def test_refused_entry_is_quarantined_and_the_rest_delivered(
    tmp_path: Path, influxdb: InfluxService
) -> None:
    db = f"q_{uuid.uuid4().hex[:8]}"
    influxql(influxdb.url, db, f'CREATE DATABASE "{db}"')
    # leak_flag already exists as a string in this shard of "water", so w2's float for it is a
    # field type conflict (HTTP 400); w1 does not send leak_flag.
    req = urllib.request.Request(
        f"{influxdb.url}/write?db={db}",
        method="POST",
        data=f'water,device=w0,site=s leak_flag="oops" {BASE_NS}'.encode(),
    )
    (await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)).close()
    encoder = ReadingEncoder(site_id="s")
    outbox = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=encoder)
    store = InfluxV1Store(url=influxdb.url, database=db, encoder=encoder)
    await outbox.append_readings(_readings("w1", 10))
    await outbox.append_readings(
        [
            Reading(r.device_id, r.kind, r.ts_ns, r.seq, {**r.fields, "leak_flag": 0.0})
            for r in _readings("w2", 10)
        ]
    )
    await outbox.append_readings(_readings("w1", 20)[10:])
    forwarder = Forwarder(outbox, store)
    assert await forwarder.drain(timeout_s=20)
    stats = outbox.stats()
    assert (stats.quarantined_entries, stats.quarantined_points, stats.entries) == (1, 10, 0)
    assert forwarder.rejected_entries == 1 and "conflict" in str(forwarder.last_error)
    got = await store.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert got.seq == list(range(20))
    await outbox.close()
    await store.close()


@pytest.mark.integration
async def test_forwarder_backs_off_while_influx_is_away_and_logs_once(
    tmp_path: Path, influxdb: InfluxService, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"b_{uuid.uuid4().hex[:8]}"
    encoder = ReadingEncoder(site_id="s")
    outbox = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=encoder)
    store = InfluxV1Store(url=influxdb.url, database=db, encoder=encoder, timeout_s=1)
    forwarder = Forwarder(outbox, store, backoff=Backoff(initial_s=0.01, max_s=0.04))
    caplog.set_level(logging.INFO, logger="gateway.storage")
    await outbox.append_readings(_readings("w1", 10))
    influxdb.stop()
    try:
        for _ in range(4):
            assert await forwarder.forward_once() == 0
        assert forwarder.state is ForwarderState.BACKOFF
        assert forwarder.stats().consecutive_failures == 4 and forwarder.errors == 4
        assert outbox.stats().points == 10
    finally:
        influxdb.start()
    assert await forwarder.forward_once() == 10  # creates the missing database on the way
    assert forwarder.stats().consecutive_failures == 0 and outbox.stats().points == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store unavailable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert len(await store.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)) == 10
    await outbox.close()
    await store.close()


def test_backoff_is_capped_and_jittered() -> None:
    import random

    b = Backoff(initial_s=0.5, max_s=30.0, rng=random.Random(1))
    delays = [b.next_delay_s() for _ in range(12)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert delays[0] <= 0.5 and max(delays) <= 30 and delays[-1] >= 15
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next_delay_s() <= 0.5


async def test_embedded_retention_keeps_rollups_after_raw_is_gone(tmp_path: Path) -> None:
    store = await EmbeddedStore.open(tmp_path / "r.sqlite", raw_retention_days=1, retention_days=3)
    now = BASE_NS + 10 * DAY_NS
    old = _readings("w1", 10, start_ns=now - 2 * DAY_NS)  # beyond raw, within roll-up retention
    ancient = _readings("w1", 10, start_ns=now - 5 * DAY_NS)  # beyond both
    fresh = _readings("w1", 10, start_ns=now - HOUR_NS)
    await store.write(ancient + old + fresh)
    deleted = await store.maintain(now=now)
    assert deleted["readings"] == 20 and deleted["rollups"] > 0
    raw = await store.query("w1", start_ns=now - 6 * DAY_NS, end_ns=now)
    assert len(raw) == 10
    hourly = await store.query(
        "w1", fields=["flow_m3h"], start_ns=now - 6 * DAY_NS, end_ns=now, every_s=3600, agg="max"
    )
    assert len(hourly) == 2 and hourly.columns["flow_m3h"] == [0.6, 0.6]
    daily = await store.query(
        "w1",
        fields=["volume_forward_m3"],
        start_ns=now - 6 * DAY_NS,
        end_ns=now,
        every_s=86400,
        agg="last",
    )
    assert daily.columns["volume_forward_m3"] == pytest.approx([100.09, 100.09])
    await store.close()


def test_health_verdict() -> None:
    from gateway.storage.metrics import health_status

    base = {
        "outbox_bytes": 0,
        "outbox_max_bytes": 1000,
        "consecutive_failures": 0,
        "outbox_oldest_age_s": 0.0,
        "rejected_entries": 0,
    }
    assert health_status(base) == "ok"
    assert health_status({**base, "consecutive_failures": 2}) == "degraded"
    assert health_status({**base, "outbox_bytes": 850}) == "degraded"
    assert health_status({**base, "rejected_entries": 1}) == "degraded"
    assert health_status({**base, "outbox_bytes": 960}) == "failing"
    assert (
        health_status({**base, "consecutive_failures": 1, "outbox_oldest_age_s": 301}) == "failing"
    )


@pytest.mark.parametrize("backend", ["embedded", "influx_v1"])
async def test_corrupt_outbox_entry_is_quarantined_not_retried_forever(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    import sqlite3

    encoder = ReadingEncoder(site_id="s")
    outbox = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=encoder)
    await outbox.append_readings(_readings("w1", 10))
    await outbox.append_readings(_readings("w1", 20)[10:])
    await outbox.close()
    with sqlite3.connect(tmp_path / "o.sqlite") as db:  # bit rot in the first entry
        db.execute("UPDATE entries SET payload = x'1f8b0800deadbeef' WHERE id = 1")
    outbox = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=encoder)
    if backend == "embedded":
        store: EmbeddedStore | InfluxV1Store = await EmbeddedStore.open(tmp_path / "r.sqlite")
    else:
        influx: InfluxService = request.getfixturevalue("influxdb")
        store = InfluxV1Store(url=influx.url, database=f"c_{uuid.uuid4().hex[:8]}", encoder=encoder)
    forwarder = Forwarder(outbox, store, backoff=Backoff(initial_s=0.01, max_s=0.02))
    assert await forwarder.drain(timeout_s=20)
    assert outbox.stats().quarantined_entries == 1 and forwarder.rejected_entries == 1
    got = await store.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert got.seq == list(range(10, 20))
    await outbox.close()
    await store.close()


@pytest.mark.integration
async def test_v1_retention_policy_is_used_for_writes_and_queries(influxdb: InfluxService) -> None:
    db = f"rp_{uuid.uuid4().hex[:8]}"
    influxql(influxdb.url, db, f'CREATE DATABASE "{db}"')
    influxql(
        influxdb.url, db, f'CREATE RETENTION POLICY "keep it" ON "{db}" DURATION 0s REPLICATION 1'
    )
    encoder = ReadingEncoder(site_id="s")
    store = InfluxV1Store(
        url=influxdb.url, database=db, retention_policy="keep it", encoder=encoder
    )
    await store.write(_readings("w1", 5))
    got = await store.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert got.seq == list(range(5))
    in_rp = influxql(influxdb.url, db, f'SELECT count("seq") FROM "{db}"."keep it"."water"')
    assert in_rp["results"][0]["series"][0]["values"][0][1] == 5
    default = influxql(influxdb.url, db, 'SELECT count("seq") FROM "water"')
    assert "series" not in default["results"][0]  # nothing went to the default policy
    await store.close()
