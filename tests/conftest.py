"""Session fixtures: real Mosquitto and InfluxDB servers on private ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import InfluxService, ServiceProcess, influxdb_service, mosquitto_service


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A Mosquitto broker on a private port (``.host``, ``.port``); restartable."""
    svc = mosquitto_service(tmp_path_factory.mktemp("mosquitto"))
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxService]:
    """An InfluxDB 1.x server on a private port (``.url``); restartable for outage tests."""
    svc = influxdb_service(tmp_path_factory.mktemp("influxdb"))
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
