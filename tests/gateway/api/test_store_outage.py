"""While InfluxDB is away, history routes answer 503 with Retry-After, not 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.api import create_app
from gateway.storage import InfluxV1Store, ReadingEncoder
from tests.gateway.api.conftest import (
    NORTH,
    StaticStatus,
    asgi_client,
    auth,
    device_statuses,
    make_settings,
)
from tests.services import InfluxService

pytestmark = pytest.mark.integration


async def test_readings_route_says_503_while_influxdb_is_stopped(
    tmp_path: Path, influxdb: InfluxService
) -> None:
    from gateway.alerts import AlertStore

    settings = make_settings(tmp_path)
    alerts = AlertStore(tmp_path / "alerts.sqlite")
    store = InfluxV1Store(
        url=influxdb.url,
        database="api_outage",
        encoder=ReadingEncoder(site_id=NORTH),
        timeout_s=2.0,
    )
    app = create_app(
        settings=settings,
        alerts=alerts,
        ledger=alerts.ledger,
        store=store,
        status=StaticStatus(device_statuses()),
    )
    try:
        async with asgi_client(app) as http:
            ok = await http.get("/api/v1/devices/n1/readings", headers=auth("admin"))
            assert ok.status_code == 200
            influxdb.stop()
            try:
                down = await http.get("/api/v1/devices/n1/readings", headers=auth("admin"))
            finally:
                influxdb.start()
            assert down.status_code == 503
            assert down.headers["retry-after"] == "30"
            assert "unavailable" in down.json()["detail"]
    finally:
        await store.close()
        alerts.close()
