"""What the routes answer: alert filters, pagination, actions, readings, timeline,
evidence, ledger verification, limits, health and metrics, against the real
AlertStore, ledger and embedded reading store."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from drivers.reading import DeviceKind, Reading, now_ns
from gateway.api import create_app
from gateway.api.status import DeviceState, DeviceStatus
from gateway.evidence import readings_digest
from gateway.evidence.verify_bundle import Bundle, check
from gateway.storage import point_ts_ns
from tests.gateway.api.conftest import (
    NORTH,
    World,
    asgi_client,
    auth,
    build_world,
    cheating_finding,
    close_world,
    key_of,
)

ADMIN = auth("admin")
INSPECTOR = auth("inspector")


async def test_alert_filters_and_cursor_pagination(client: httpx.AsyncClient, world: World) -> None:
    for i in range(7):
        world.alerts.ingest(
            cheating_finding("n1", detector=f"integrity.test_{i}"),
            site=NORTH,
            evidence_digest="c" * 64,
        )
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "3", "site": NORTH} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/alerts", params=params, headers=ADMIN)).json()
        assert len(page["items"]) <= 3
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and seen == sorted(seen, reverse=True)  # newest first, no repeats

    one = await client.get("/api/v1/alerts", params={"detector": "integrity.test_3"}, headers=ADMIN)
    assert [a["detector"] for a in one.json()["items"]] == ["integrity.test_3"]
    by_device = await client.get("/api/v1/alerts", params={"device": "s1"}, headers=ADMIN)
    assert [a["device"] for a in by_device.json()["items"]] == ["s1"]
    future = await client.get(
        "/api/v1/alerts", params={"since_ns": str(now_ns() + 10**12)}, headers=ADMIN
    )
    assert future.json()["items"] == []
    warning = await client.get("/api/v1/alerts", params={"severity": "warning"}, headers=ADMIN)
    assert warning.json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "51"},  # api.max_page_size is 50 in these tests
        {"limit": "0"},
        {"status": "closed"},
        {"severity": "loud"},
        {"device": "bad id with spaces"},
    ],
)
async def test_malformed_alert_queries_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/v1/alerts", params=params, headers=ADMIN)
    assert response.status_code == 422, response.text


async def test_unknown_cursor_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/alerts", params={"cursor": "critical"}, headers=ADMIN)
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


async def test_actions_follow_the_lifecycle_and_record_the_keys_name(
    client: httpx.AsyncClient, world: World
) -> None:
    url = f"/api/v1/alerts/{world.north_alert.id}"
    ack = await client.post(
        f"{url}/acknowledge", json={"note": "seal looks broken"}, headers=INSPECTOR
    )
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    again = await client.post(f"{url}/acknowledge", headers=INSPECTOR)
    assert again.status_code == 409 and "acknowledged" in again.json()["detail"]
    empty_note = await client.post(f"{url}/note", json={"note": "  "}, headers=INSPECTOR)
    assert empty_note.status_code == 422
    unknown_field = await client.post(f"{url}/note", json={"text": "x"}, headers=INSPECTOR)
    assert unknown_field.status_code == 422
    resolved = await client.post(f"{url}/resolve", json={"note": "meter replaced"}, headers=ADMIN)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    history = [(h["kind"], h["who"], h["note"]) for h in resolved.json()["history"]]
    assert history[-2:] == [
        ("acknowledged", "inspector", "seal looks broken"),
        ("resolved", "admin", "meter replaced"),
    ]
    missing = await client.post("/api/v1/alerts/424242/dismiss", headers=ADMIN)
    assert missing.status_code == 404
    bad_action = await client.post(f"{url}/explode", headers=ADMIN)
    assert bad_action.status_code in (404, 405)


async def test_body_size_limit_is_413(client: httpx.AsyncClient, world: World) -> None:
    url = f"/api/v1/alerts/{world.north_alert.id}/note"
    big = {"note": "x" * 5000}  # api.max_body_bytes is 4096 in these tests
    response = await client.post(url, json=big, headers=INSPECTOR)
    assert response.status_code == 413

    # a chunked body without Content-Length is cut off as well
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    chunked = await client.post(
        url, content=chunks(), headers=INSPECTOR | {"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    # the alert was not touched
    alert = (await client.get(f"/api/v1/alerts/{world.north_alert.id}", headers=ADMIN)).json()
    assert [h["kind"] for h in alert["history"]] == ["created"]


async def test_readings_raw_downsampled_and_filtered(client: httpx.AsyncClient) -> None:
    raw = (await client.get("/api/v1/devices/n1/readings", headers=INSPECTOR)).json()
    assert len(raw["ts_ns"]) == 120 and raw["every_s"] is None
    assert set(raw["fields"]) == {"totalizer_volume_l", "flow_rate_lpm"}
    assert raw["seq"] == list(range(120)) and set(raw["quality"]) == {"ok"}
    assert raw["fields"]["totalizer_volume_l"][:3] == [1000.0, 1005.0, 1010.0]

    down = await client.get(
        "/api/v1/devices/n1/readings",
        params={"every_s": "3600", "fields": "totalizer_volume_l", "agg": "max"},
        headers=INSPECTOR,
    )
    body = down.json()
    assert down.status_code == 200 and set(body["fields"]) == {"totalizer_volume_l"}
    assert 2 <= len(body["ts_ns"]) <= 3 and body["agg"] == "max"
    assert max(body["fields"]["totalizer_volume_l"]) == 1000.0 + 5 * 119

    limited = await client.get(
        "/api/v1/devices/n1/readings", params={"limit": "10"}, headers=INSPECTOR
    )
    assert len(limited.json()["ts_ns"]) == 10 and limited.json()["truncated"] is True


async def test_readings_history_window_by_role(client: httpx.AsyncClient) -> None:
    old = str(now_ns() - 30 * 86_400 * 10**9)
    inspector = await client.get(
        "/api/v1/devices/n1/readings", params={"start_ns": old}, headers=INSPECTOR
    )
    assert inspector.status_code == 403 and "7 days" in inspector.json()["detail"]
    enforcement = await client.get(
        "/api/v1/devices/n1/readings", params={"start_ns": old}, headers=auth("enforcement")
    )
    assert enforcement.status_code == 200 and len(enforcement.json()["ts_ns"]) == 120
    reversed_range = await client.get(
        "/api/v1/devices/n1/readings",
        params={"start_ns": "2000", "end_ns": "1000"},
        headers=ADMIN,
    )
    assert reversed_range.status_code == 400


async def test_timeline_has_readings_alerts_and_events(
    client: httpx.AsyncClient, world: World
) -> None:
    world.alerts.act(world.north_alert.id, "acknowledge", who="inspector", note="looking")
    body = (await client.get("/api/v1/devices/n1/timeline", headers=auth("enforcement"))).json()
    assert len(body["readings"]["ts_ns"]) <= 201 and body["readings"]["every_s"] > 0
    assert [a["id"] for a in body["alerts"]] == [world.north_alert.id]
    assert [(e["kind"], e["who"]) for e in body["events"]] == [
        ("created", "meterwatch"),
        ("acknowledged", "inspector"),
    ]


async def test_device_detail_has_live_status_latest_reading_and_open_alerts(
    client: httpx.AsyncClient, world: World
) -> None:
    world.status.snapshot = [
        d.model_copy(update={"state": DeviceState.BACKOFF, "last_quality": "timeout"})
        if d.id == "n1"
        else d
        for d in world.status.snapshot
    ]
    body = (await client.get("/api/v1/devices/n1", headers=INSPECTOR)).json()
    assert body["state"] == "backoff" and body["last_quality"] == "timeout"
    assert body["open_alerts"] == 1 and body["mpe_pct"] == 0.5
    assert body["latest"]["seq"] == 119
    assert body["latest"]["fields"]["totalizer_volume_l"] == 1000.0 + 5 * 119


async def test_evidence_bundle_verifies_with_its_own_verifier(
    client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    # Readings as a driver produces them: nanosecond timestamps whose last digits
    # differ from the stored ones (the store keeps seq % 1000 there).
    t0 = now_ns() - 4 * 3600 * 10**9  # before the fixture's readings of n1
    t0 -= t0 % 1000
    polled = [
        Reading(
            "n1",
            DeviceKind.DISPENSER_NOZZLE,
            t0 + i * 10 * 10**9 + 999,  # stored as ...000 + seq % 1000: up to 999 ns earlier
            5000 + i,
            {"totalizer_volume_l": 2000.0 + 0.25 * i, "calibration_k_factor": 100.0 + (i > 5)},
        )
        for i in range(12)
    ]
    await world.store.write(polled)
    # The pipeline digests the cited readings in their stored form.
    stored_form = [dataclasses.replace(r, ts_ns=point_ts_ns(r.ts_ns, r.seq)) for r in polled]
    assert stored_form[0].ts_ns < polled[0].ts_ns
    finding = dataclasses.replace(
        cheating_finding("n1", detector="integrity.parameter_change"),
        window_start_ns=polled[0].ts_ns,  # the window is in driver time
        window_end_ns=polled[-1].ts_ns,
    )
    change = world.alerts.ingest(finding, site=NORTH, evidence_digest=readings_digest(stored_form))
    assert change is not None
    response = await client.get(
        f"/api/v1/alerts/{change.alert.id}/evidence", headers=auth("enforcement")
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as z:
        z.extractall(tmp_path)
    folder = tmp_path / f"alert-{change.alert.id}"
    assert check(Bundle(folder)) == []
    assert len((folder / "readings.csv").read_text().splitlines()) == 1 + len(polled)


async def test_ledger_verification_names_the_first_bad_entry(
    client: httpx.AsyncClient, world: World
) -> None:
    for note in ("one", "two", "three"):
        world.alerts.act(world.north_alert.id, "note", who="inspector", note=note)
    good = (await client.get("/api/v1/ledger/verify", headers=auth("enforcement"))).json()
    assert good["ok"] is True and good["size"] == 5 and good["first_bad"] is None
    # Tamper with entry 3 behind the store's back.
    with sqlite3.connect(world.alerts.path) as db:
        raw = db.execute("SELECT entry FROM ledger_entries WHERE idx = 3").fetchone()[0]
        db.execute(
            "UPDATE ledger_entries SET entry = ? WHERE idx = 3",
            (bytes(raw).replace(b"two", b"tw0"),),
        )
    bad = (await client.get("/api/v1/ledger/verify", headers=ADMIN)).json()
    assert bad["ok"] is False and bad["first_bad"] == 3 and bad["problem"]


async def test_failed_authentication_is_rate_limited_per_ip(tmp_path: Path) -> None:
    world = await build_world(tmp_path, auth_failures_per_minute=3)
    try:
        async with (
            asgi_client(world.app, ip="10.9.9.9") as guesser,
            asgi_client(world.app, ip="10.8.8.8") as other,
        ):
            for _ in range(3):
                r = await guesser.get("/api/v1/me", headers={"X-API-Key": "mw_guess"})
                assert r.status_code == 401
            blocked = await guesser.get("/api/v1/me", headers={"X-API-Key": key_of("admin")})
            assert blocked.status_code == 429
            assert 1 <= int(blocked.headers["retry-after"]) <= 60
            # another address is not affected, and /health stays open
            assert (await other.get("/api/v1/me", headers=ADMIN)).status_code == 200
            assert (await guesser.get("/health")).status_code == 200
            metrics = (await other.get("/metrics", headers=ADMIN)).text
            assert "meterwatch_api_auth_failures_total 3.0" in metrics
            assert "meterwatch_api_auth_throttled_total 1.0" in metrics
    finally:
        await close_world(world)


async def test_keys_never_reach_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await client.get("/api/v1/me", headers={"Authorization": "Bearer mw_wrong-secret-123"})
    await client.get("/api/v1/me", headers=ADMIN)
    assert caplog.records, "the failure is logged"
    text = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert "mw_wrong-secret-123" not in text and key_of("admin") not in text


async def test_health_degraded_with_reasons(client: httpx.AsyncClient, world: World) -> None:
    world.status.snapshot = [
        d.model_copy(update={"state": DeviceState.DOWN}) if d.id == "s1" else d
        for d in world.status.snapshot
    ]
    body = (await client.get("/health")).json()
    assert body["status"] == "degraded" and body["reasons"] == ["1 of 2 devices not up"]
    assert body["devices_up"] == 1


async def test_metrics_count_requests_devices_and_alerts(
    client: httpx.AsyncClient, world: World
) -> None:
    await client.get("/api/v1/devices/n1", headers=INSPECTOR)
    text = (await client.get("/metrics", headers=ADMIN)).text
    assert (
        'meterwatch_api_requests_total{method="GET",route="/api/v1/devices/{device_id}",'
        'status="2xx"} 1.0' in text
    )
    assert 'meterwatch_devices{state="up"} 2.0' in text
    assert 'meterwatch_alerts{status="open"} 2.0' in text
    assert "n1" not in text.replace("/api/v1", "")  # no ids as labels


class _BrokenStatus:
    def devices(self) -> list[DeviceStatus]:
        raise RuntimeError("status board gone")


async def test_health_survives_a_failing_status_provider(world: World) -> None:
    broken = create_app(
        settings=world.settings,
        alerts=world.alerts,
        ledger=world.alerts.ledger,
        store=world.store,
        status=_BrokenStatus(),
    )
    async with asgi_client(broken) as c:
        response = await c.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["reasons"] == ["device status unavailable"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/alerts?since_ns=9223372036854775808",
        "/api/v1/alerts?until_ns=100000000000000000000",
        "/api/v1/devices/n1/readings?end_ns=9223372036854775808",
        "/api/v1/devices/n1/timeline?start_ns=100000000000000000000",
        "/api/v1/alerts/9223372036854775808",
    ],
)
async def test_timestamps_and_ids_beyond_64_bits_are_422_not_500(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.get(url, headers=ADMIN)
    assert response.status_code == 422, response.text


async def test_largest_timestamp_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/alerts", params={"until_ns": str(2**63 - 1)}, headers=ADMIN
    )
    assert response.status_code == 200 and len(response.json()["items"]) == 2
