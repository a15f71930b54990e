"""The v2 writer (influxdb-client, /api/v2/write) against Debian's victoria-metrics,
read back through its export API."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from drivers.reading import DeviceKind, Reading
from gateway.storage import (
    Forwarder,
    InfluxV1Store,
    InfluxV2Store,
    Outbox,
    ReadingEncoder,
    SinkUnavailable,
    point_ts_ns,
)
from tests.gateway.storage.conftest import BASE_NS, VictoriaMetrics
from tests.services import InfluxService, free_port

pytestmark = pytest.mark.integration


def _export(vm: VictoriaMetrics, match: str) -> list[dict[str, object]]:
    # Make what was just written visible to search, then export raw samples.
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=10).close()
    query = urllib.parse.urlencode({"match[]": match, "start": "0"})
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=10) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


def _store(url: str, encoder: ReadingEncoder, bucket: str = "readings") -> InfluxV2Store:
    return InfluxV2Store(
        url=url,
        token="test-token-not-secret",
        org="meterwatch",
        bucket=bucket,
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


async def test_v2_reads_through_the_v1_compatible_query_api(influxdb: InfluxService) -> None:
    """InfluxDB 2.x answers InfluxQL on /query with the token and the bucket as database;
    1.x serves the same endpoint, so the v2 store's read path is checked against it."""
    encoder = ReadingEncoder(site_id="s2")
    bucket = f"v2_{uuid.uuid4().hex[:8]}"
    v1 = InfluxV1Store(url=influxdb.url, database=bucket, encoder=encoder)
    await v1.ensure_database()
    readings = [
        Reading("t 1", DeviceKind.TANK_GAUGE, BASE_NS + s * 10**9, s, {"net_volume_l": 100.0 - s})
        for s in range(30)
    ]
    await v1.write(readings)
    v2 = _store(influxdb.url, encoder, bucket)  # the bucket name is the DBRP database
    for kwargs in ({}, {"every_s": 10.0, "agg": "min"}):
        assert await v2.query("t 1", start_ns=BASE_NS, end_ns=BASE_NS + 10**12, **kwargs) == (
            await v1.query("t 1", start_ns=BASE_NS, end_ns=BASE_NS + 10**12, **kwargs)
        )
    latest = await v2.latest("t 1")
    assert latest is not None and latest.seq == 29 and latest.fields == {"net_volume_l": 71.0}
    await v1.close()
    await v2.close()
