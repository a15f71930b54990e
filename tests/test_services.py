"""The real servers the suite depends on start, answer, and survive a restart."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request

import pytest

from tests.services import InfluxService, ServiceProcess

pytestmark = pytest.mark.integration


def _query(url: str, q: str) -> dict[str, object]:
    data = urllib.parse.urlencode({"q": q}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_influxdb_answers_influxql(influxdb: InfluxService) -> None:
    _query(influxdb.url, "CREATE DATABASE svc_check")
    body = _query(influxdb.url, "SHOW DATABASES")
    names = [v[0] for v in body["results"][0]["series"][0]["values"]]  # type: ignore[index]
    assert "svc_check" in names


def test_mosquitto_passes_a_retained_message(mosquitto: ServiceProcess) -> None:
    port = str(mosquitto.port)
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "svc/check",
            "-m",
            "hello",
            "-r",
            "-q",
            "1",
        ],
        check=True,
        timeout=10,
    )
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "svc/check", "-C", "1", "-W", "5"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    assert out.stdout.strip() == b"hello"
