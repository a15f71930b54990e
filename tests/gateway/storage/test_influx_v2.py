"""The v2 writer (influxdb-client, /api/v2/write) against Debian's victoria-metrics,
read back through its export API."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from drivers.reading import DeviceKind, Reading
from gateway.storage import (
    Forwarder,
    InfluxV2Store,
    Outbox,
    ReadingEncoder,
    SinkUnavailable,
    point_ts_ns,
)
from tests.gateway.storage.conftest import BASE_NS, VictoriaMetrics
from tests.services import free_port

pytestmark = pytest.mark.integration


def _export(vm: VictoriaMetrics, match: str) -> list[dict[str, object]]:
    # Make what was just written visible to search, then export raw samples.
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=10).close()
    query = urllib.parse.urlencode({"match[]": match, "start": "0"})
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=10) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


def _store(url: str, encoder: ReadingEncoder) -> InfluxV2Store:
    return InfluxV2Store(
        url=url,
        token="test-token-not-secret",
        org="meterwatch",
        bucket="readings",
        encoder=encoder,
        timeout_s=5,
    )


async def test_v2_writes_through_outbox_and_forwarder(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    encoder = ReadingEncoder(site_id="site v2", profiles={"g 1": "gas_corrector"})
    readings = [
        Reading(
            dev,
            DeviceKind.GAS,
            BASE_NS + s * 10**9 + 123_456,
            s,
            {"temperature_c": 10.0 + s, "pressure_bar": 1.01325 * (d + 1)},
        )
        for s in range(50)
        for d, dev in enumerate(("g 1", "g,2"))
    ]
    outbox = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=encoder)
    store = _store(victoria.url, encoder)
    forwarder = Forwarder(outbox, store, batch_points=30)
    await outbox.append_readings(readings[:60])
    await outbox.append_readings(readings[60:])
    assert await forwarder.drain(timeout_s=20)
    direct = Reading("g 1", DeviceKind.GAS, BASE_NS + 99 * 10**9, 99, {"temperature_c": -5.5})
    await store.write([direct])
    await outbox.close()
    await store.close()

    series = _export(victoria, '{__name__=~"gas_.*", site="site v2"}')
    by_metric: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for s in series:
        labels = s["metric"]
        assert isinstance(labels, dict)
        assert labels["kind"] == "gas"
        assert labels.get("profile") == ("gas_corrector" if labels["device"] == "g 1" else None)
        for ts_ms, value in zip(s["timestamps"], s["values"], strict=True):  # type: ignore[call-overload]
            by_metric[(labels["__name__"], labels["device"])][ts_ms] = value
    # VictoriaMetrics keeps milliseconds; the stored ns timestamp rounds down to them.
    for dev in ("g 1", "g,2"):
        seqs = by_metric[("gas_seq", dev)]
        expected = {s: point_ts_ns(BASE_NS + s * 10**9 + 123_456, s) // 10**6 for s in range(50)}
        if dev == "g 1":
            expected[99] = point_ts_ns(direct.ts_ns, 99) // 10**6
        assert {int(v): t for t, v in seqs.items()} == {s: t for s, t in expected.items()}
        temps = by_metric[("gas_temperature_c", dev)]
        assert temps[expected[7]] == 17.0
    assert by_metric[("gas_pressure_bar", "g,2")][expected[0]] == pytest.approx(2.0265)


async def test_v2_unreachable_is_retryable() -> None:
    store = _store(f"http://127.0.0.1:{free_port()}", ReadingEncoder(site_id="s"))
    with pytest.raises(SinkUnavailable):
        await store.write([Reading("g1", DeviceKind.GAS, BASE_NS, 1, {"temperature_c": 1.0})])
    await store.close()
