"""Fixtures for the API tests: the real AlertStore (with its ledger) and the real
embedded reading store in a temporary directory, a status provider, keys for
each role on two sites, and the app, in-process or under real uvicorn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from anomaly.finding import Finding, Severity
from drivers.reading import DeviceKind, Reading, now_ns
from gateway.alerts import Alert, AlertStore
from gateway.api import DeviceState, DeviceStatus, create_app
from gateway.api.auth import hash_key
from gateway.config import Settings, parse_config
from gateway.storage.embedded import EmbeddedStore
from tests.services import free_port, wait_for_port

NORTH, SOUTH = "north", "south"
# name -> (role, sites, key)
KEYS: dict[str, tuple[str, list[str], str]] = {
    "admin": ("admin", ["*"], "mw_admin-key-for-tests-0001"),
    "inspector": ("inspector", [NORTH], "mw_inspector-key-for-tests-0002"),
    "enforcement": ("enforcement", [NORTH], "mw_enforcement-key-for-tests-0003"),
}
ROLES = tuple(KEYS)


def key_of(name: str) -> str:
    return KEYS[name][2]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_of(name)}"}


def make_settings(
    tmp: Path, *, auth_failures_per_minute: int = 10_000, keys: bool = True
) -> Settings:
    return parse_config(
        {
            "site": {"id": NORTH},
            "storage": {"data_dir": str(tmp)},
            "buses": [{"id": "bus1", "transport": "tcp", "host": "127.0.0.1", "port": 1502}],
            "devices": [
                {
                    "id": "n1",
                    "kind": "dispenser_nozzle",
                    "profile": "fuel_nozzle",
                    "bus": "bus1",
                    "unit_id": 1,
                },
                {
                    "id": "s1",
                    "kind": "electricity",
                    "profile": "eastron_sdm630",
                    "bus": "bus1",
                    "unit_id": 2,
                    "site": SOUTH,
                },
            ],
            "api": {
                "keys": [
                    {"name": name, "role": role, "sites": sites, "sha256": hash_key(key)}
                    for name, (role, sites, key) in KEYS.items()
                ]
                if keys
                else [],
                "max_page_size": 50,
                "max_body_bytes": 4096,
                "auth_failures_per_minute": auth_failures_per_minute,
            },
        }
    )


class StaticStatus:
    """A `StatusProvider` over a fixed list (the runtime's pollers are not under test)."""

    def __init__(self, devices: list[DeviceStatus]) -> None:
        self.snapshot = devices

    def devices(self) -> list[DeviceStatus]:
        return list(self.snapshot)


def device_statuses() -> list[DeviceStatus]:
    now = now_ns()
    return [
        DeviceStatus(
            id="n1",
            kind=DeviceKind.DISPENSER_NOZZLE,
            site=NORTH,
            profile="fuel_nozzle",
            state=DeviceState.UP,
            last_ok_ns=now,
            last_quality="ok",
            seq=120,
            errors=0,
        ),
        DeviceStatus(
            id="s1",
            kind=DeviceKind.ELECTRICITY,
            site=SOUTH,
            profile="eastron_sdm630",
            state=DeviceState.UP,
            last_ok_ns=now,
            last_quality="ok",
            seq=120,
            errors=2,
        ),
    ]


def cheating_finding(device: str, *, detector: str = "reconciliation.tank_nozzle_error") -> Finding:
    end = now_ns()
    return Finding(
        detector=detector,
        devices=(device,),
        score=4.2,
        threshold=1.0,
        window_start_ns=end - 3_600_000_000_000,
        window_end_ns=end,
        explanation=f"{device} over-registers by 2.1 % (95 % CI 1.6..2.6 %), MPE 0.5 %",
        severity=Severity.CRITICAL,
        estimate=2.1,
        ci_low=1.6,
        ci_high=2.6,
        unit="%",
    )


@dataclass
class World:
    """The app and the real parts behind it."""

    app: FastAPI
    settings: Settings
    alerts: AlertStore
    store: EmbeddedStore
    status: StaticStatus
    north_alert: Alert
    south_alert: Alert


async def _readings(store: EmbeddedStore) -> None:
    end = now_ns()
    step = 60 * 1_000_000_000
    batch: list[Reading] = []
    for i in range(120):
        ts = end - (120 - i) * step
        batch.append(
            Reading(
                "n1",
                DeviceKind.DISPENSER_NOZZLE,
                ts,
                i,
                {"totalizer_volume_l": 1000.0 + 5 * i, "flow_rate_lpm": 30.0 + (i % 7)},
            )
        )
        batch.append(Reading("s1", DeviceKind.ELECTRICITY, ts, i, {"power_total_w": 1500.0 + i}))
    await store.write(batch)


async def build_world(tmp: Path, **settings_options: Any) -> World:
    settings = make_settings(tmp, **settings_options)
    alerts = AlertStore(tmp / "alerts.sqlite")
    store = await EmbeddedStore.open(tmp / "readings.sqlite")
    await _readings(store)
    north = alerts.ingest(cheating_finding("n1"), site=NORTH, evidence_digest="a" * 64)
    south = alerts.ingest(cheating_finding("s1"), site=SOUTH, evidence_digest="b" * 64)
    assert north is not None and south is not None
    status = StaticStatus(device_statuses())
    app = create_app(
        settings=settings, alerts=alerts, ledger=alerts.ledger, store=store, status=status
    )
    return World(app, settings, alerts, store, status, north.alert, south.alert)


async def close_world(world: World) -> None:
    await world.store.close()
    world.alerts.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A fresh world per test (for tests that change alerts)."""
    w = await build_world(tmp_path)
    yield w
    await close_world(w)


@pytest.fixture(scope="module")
async def shared_world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One world per module, for tests that only read (or add notes)."""
    w = await build_world(tmp_path_factory.mktemp("world"))
    yield w
    await close_world(w)


def asgi_client(app: FastAPI, *, ip: str = "10.1.2.3") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw")


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(world.app) as c:
        yield c


class ServerThread:
    """Real uvicorn serving an app on a free 127.0.0.1 port, in its own thread and loop."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="uvicorn-test", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for_port("127.0.0.1", self.port, timeout_s=10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.app.state.close_streams()  # as the runtime does before it stops the server
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def server(world: World) -> Iterator[ServerThread]:
    with ServerThread(world.app) as srv:
        yield srv
