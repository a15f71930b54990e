"""Storage test helpers: stores to run the contract suite on, and a VictoriaMetrics server."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.storage import EmbeddedStore, InfluxV1Store, ReadingEncoder, ReadingStore
from tests.services import InfluxService, ServiceProcess, free_port

HOUR_NS = 3600 * 10**9
BASE_NS = 1_700_000_000 * 10**9 - (1_700_000_000 * 10**9) % HOUR_NS  # an hour boundary


def influxql(url: str, db: str, statement: str) -> dict[str, Any]:
    """Run InfluxQL directly (test-side check, independent of the code under test)."""
    query = urllib.parse.urlencode({"q": statement, "db": db, "epoch": "ns"})
    req = urllib.request.Request(f"{url}/query?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


@dataclass
class StoreFactory:
    """Opens a fresh, empty store of one backend per call."""

    backend: str
    tmp_path: Path
    influx: InfluxService | None = None
    database: str = ""

    @contextlib.asynccontextmanager
    async def open(
        self, *, site_id: str = "site-1", profiles: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[ReadingStore, ReadingEncoder]]:
        encoder = ReadingEncoder(site_id=site_id, profiles=profiles)
        store: ReadingStore
        if self.backend == "embedded":
            store = await EmbeddedStore.open(self.tmp_path / f"{uuid.uuid4().hex}.sqlite")
        else:
            assert self.influx is not None
            self.database = f"t_{uuid.uuid4().hex[:12]}"
            v1 = InfluxV1Store(url=self.influx.url, database=self.database, encoder=encoder)
            assert await v1.ensure_database()
            store = v1
        try:
            yield store, encoder
        finally:
            await store.close()


@pytest.fixture(params=["embedded", "influx_v1"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """The contract suite runs once per `ReadingStore` implementation."""
    if request.param == "embedded":
        return StoreFactory("embedded", tmp_path)
    influx: InfluxService = request.getfixturevalue("influxdb")
    return StoreFactory("influx_v1", tmp_path, influx)


class VictoriaMetrics(ServiceProcess):
    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise TimeoutError("victoria-metrics did not answer /health")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """Debian's victoria-metrics on a private port; it accepts /api/v2/write."""
    binary = shutil.which("victoria-metrics")
    if binary is None:
        raise RuntimeError("victoria-metrics is not installed; run scripts/test")
    workdir = tmp_path_factory.mktemp("victoria")
    port = free_port()
    svc = VictoriaMetrics(
        "victoria-metrics",
        [
            binary,
            f"-storageDataPath={workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ],
        port,
        workdir,
    )
    svc.start()
    yield svc
    svc.stop()
