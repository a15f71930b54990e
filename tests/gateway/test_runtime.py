"""The whole gateway, end to end: simulators -> real drivers -> outbox -> InfluxDB,
anomaly engine -> alerts, API; an orderly drain on stop and a restart that keeps state."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings, parse_config
from gateway.runtime import STATE_FILE, Gateway
from simulators.serve import Simulation, serve
from tests.services import InfluxService, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "mwk_runtime-test-key-0123456789"


def _settings(
    sim: Simulation, tmp_path: Path, influx: InfluxService, mqtt: ServiceProcess
) -> Settings:
    devices: list[dict[str, Any]] = []
    for d in sim.devices:
        dev: dict[str, Any] = {"id": d.id, "kind": d.kind, "profile": d.profile}
        if d.topic is not None:
            dev |= {"bus": "mq", "topic": d.topic}
        else:
            dev |= {"bus": "sim", "unit_id": d.unit_id, "poll_interval_s": 1.0, "timeout_s": 0.5}
        devices.append(dev)
    return parse_config(
        {
            "site": {"id": "rt"},
            "buses": [
                {"id": "sim", "transport": "tcp", "host": "127.0.0.1", "port": sim.modbus_port},
                {
                    "id": "mq",
                    "transport": "mqtt",
                    "host": "127.0.0.1",
                    "port": mqtt.port,
                    "client_id": f"rt-{tmp_path.name}",
                },
            ],
            "devices": devices,
            "groups": [
                {"id": g.id, "type": g.type, "reference": g.reference, "members": list(g.members)}
                for g in sim.groups
            ],
            "storage": {
                "backend": "influxdb_v1",
                "data_dir": str(tmp_path / "data"),
                "influxdb": {
                    "url": influx.url,
                    "database": f"rt_{tmp_path.name[-12:]}",
                    "flush_interval_s": 0.2,
                },
            },
            "api": {
                "port": 0,
                "keys": [
                    {
                        "name": "admin",
                        "role": "admin",
                        "sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                    }
                ],
            },
        }
    )


async def _count_in_store(
    gw: Gateway, device: str, start_ns: int, end_ns: int
) -> tuple[int, set[int]]:
    assert gw.parts is not None
    res = await gw.parts.storage.store.query(device, start_ns=start_ns, end_ns=end_ns)
    return len(res.ts_ns), set(res.seq)


async def test_gateway_polls_stores_serves_and_drains(
    tmp_path: Path, influxdb: InfluxService, mosquitto: ServiceProcess
) -> None:
    start_ns = time.time_ns()
    async with serve(
        "demo", modbus_port=0, mqtt=("127.0.0.1", mosquitto.port), speed=1.0, mqtt_period_s=1.0
    ) as sim:
        settings = _settings(sim, tmp_path, influxdb, mosquitto)
        gw = Gateway(settings)
        runner = asyncio.create_task(gw.run())
        await asyncio.wait_for(gw.ready.wait(), 30)
        assert gw.parts is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.api_port}") as http:
            assert (await http.get("/health")).status_code == 200
            # every device, Modbus and MQTT, delivers readings through the real drivers
            for _ in range(100):
                counts = gw.parts.status.counts()
                if counts.get("up", 0) == len(settings.devices):
                    break
                await asyncio.sleep(0.1)
            assert gw.parts.status.counts().get("up", 0) == len(settings.devices)
            devices = (await http.get("/api/v1/devices", headers={"X-API-Key": KEY})).json()
            assert {d["id"] for d in devices} == {d.id for d in settings.devices}
        await asyncio.sleep(2.0)
        gw.stop()
        await asyncio.wait_for(runner, 60)
    end_ns = time.time_ns()

    # Nothing taken was lost: every reading the drivers produced is in InfluxDB, once.
    submitted = gw.parts.pipeline.stats.readings_in
    assert gw.parts.pipeline.stats.readings_persisted == submitted
    gw2 = Gateway(settings)
    runner2 = asyncio.create_task(gw2.run())
    await asyncio.wait_for(gw2.ready.wait(), 30)
    try:
        total = 0
        for dev in settings.devices:
            n, seqs = await _count_in_store(gw2, dev.id, start_ns, end_ns)
            assert n == len(seqs), f"{dev.id}: duplicate sequence numbers"
            assert n > 0, dev.id
            total += n
        assert total == submitted
        # The engine state was saved on the way out and restored on the way in.
        assert (Path(settings.storage.data_dir) / STATE_FILE).stat().st_size > 0
    finally:
        gw2.stop()
        await asyncio.wait_for(runner2, 60)


async def test_a_taken_api_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    import socket

    from gateway.runtime import StartupError

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = parse_config(
            {"storage": {"data_dir": str(tmp_path / "d")}, "api": {"port": port}}
        )
        with pytest.raises(StartupError, match=f"api: cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(Gateway(settings).run(), 30)
