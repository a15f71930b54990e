"""One contract suite for every `ReadingStore`: embedded SQLite and InfluxDB v1 (real server).

Both are written through both paths the gateway uses: `write(readings)` and
the forwarder's `write_gzip(body)` of outbox payloads.
"""

from __future__ import annotations

import gzip
import math
import statistics
from collections.abc import Sequence

import pytest

from drivers.reading import DeviceKind, Quality, Reading
from gateway.storage import Agg, QueryError, ReadingEncoder, ReadingStore, point_ts_ns
from tests.gateway.storage.conftest import BASE_NS, HOUR_NS, StoreFactory, influxql

pytestmark = pytest.mark.integration

SEC = 10**9


async def _write(
    store: ReadingStore, encoder: ReadingEncoder, readings: Sequence[Reading], path: str
) -> None:
    if path == "readings":
        await store.write(readings)
    else:
        body = "".join(encoder.line(r) + "\n" for r in readings).encode()
        # Two gzip members, as the forwarder concatenates outbox entries.
        half = len(readings) // 2
        lines = body.splitlines(keepends=True)
        payload = gzip.compress(b"".join(lines[:half])) + gzip.compress(b"".join(lines[half:]))
        await store.write_gzip(payload, points=len(readings))


def _meter(device: str, n: int, *, start_ns: int = BASE_NS, step_ns: int = SEC) -> list[Reading]:
    return [
        Reading(
            device,
            DeviceKind.ELECTRICITY,
            start_ns + i * step_ns + 777,  # sub-µs digits are replaced by seq % 1000
            i,
            {"voltage_l1_v": 230.0 + (i % 7) * 0.5, "energy_import_kwh": 1000.0 + i * 0.25},
        )
        for i in range(n)
    ]


@pytest.fixture(params=["readings", "gzip"])
def write_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_raw_round_trip(stores: StoreFactory, write_path: str) -> None:
    readings = _meter("m1", 30)
    readings.append(
        Reading("m1", DeviceKind.ELECTRICITY, BASE_NS + 40 * SEC, 30, {}, Quality.TIMEOUT)
    )
    async with stores.open() as (store, enc):
        await _write(store, enc, readings, write_path)
        result = await store.query("m1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert result.ts_ns == [point_ts_ns(r.ts_ns, r.seq) for r in readings]
    assert result.seq == list(range(31))
    assert result.quality == ["ok"] * 30 + ["timeout"]
    assert set(result.columns) == {"voltage_l1_v", "energy_import_kwh"}
    assert result.columns["energy_import_kwh"][:30] == [
        r.fields["energy_import_kwh"] for r in readings[:30]
    ]
    assert result.columns["voltage_l1_v"][30] is None
    assert result.agg is None


async def test_field_selection_time_range_and_limit(stores: StoreFactory) -> None:
    readings = _meter("m1", 20)
    async with stores.open() as (store, _):
        await store.write(readings)
        start = point_ts_ns(readings[5].ts_ns, 5)
        end = point_ts_ns(readings[10].ts_ns, 10)
        result = await store.query(
            "m1", fields=["voltage_l1_v", "no_such_field"], start_ns=start, end_ns=end
        )
        limited = await store.query("m1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS, limit=3)
        empty = await store.query("m1", start_ns=BASE_NS - HOUR_NS, end_ns=BASE_NS)
    assert result.seq == [5, 6, 7, 8, 9]  # start inclusive, end exclusive
    assert list(result.columns) == ["voltage_l1_v", "no_such_field"]
    assert result.columns["no_such_field"] == [None] * 5
    assert result.columns["voltage_l1_v"] == [r.fields["voltage_l1_v"] for r in readings[5:10]]
    assert limited.seq == [0, 1, 2]
    assert len(empty) == 0 and empty.columns == {}


@pytest.mark.parametrize("agg", list(Agg))
@pytest.mark.parametrize("every_s", [10.0, 3600.0])
async def test_downsampled(stores: StoreFactory, agg: Agg, every_s: float) -> None:
    # 3 hours of one reading per 2 minutes, starting mid-hour.
    readings = _meter("m1", 90, start_ns=BASE_NS + HOUR_NS // 2, step_ns=120 * SEC)
    async with stores.open() as (store, _):
        await store.write(readings)
        result = await store.query(
            "m1",
            fields=["voltage_l1_v"],
            start_ns=BASE_NS,
            end_ns=BASE_NS + 4 * HOUR_NS,
            every_s=every_s,
            agg=agg,
        )
        everything = await store.query(
            "m1", start_ns=BASE_NS, end_ns=BASE_NS + 4 * HOUR_NS, every_s=every_s, agg=agg.value
        )
    every_ns = int(every_s * SEC)
    buckets: dict[int, list[tuple[int, float]]] = {}
    for r in readings:
        t = point_ts_ns(r.ts_ns, r.seq)
        buckets.setdefault(t - t % every_ns, []).append((t, r.fields["voltage_l1_v"]))
    fn = {
        Agg.MEAN: lambda vs: statistics.fmean(v for _, v in vs),
        Agg.MIN: lambda vs: min(v for _, v in vs),
        Agg.MAX: lambda vs: max(v for _, v in vs),
        Agg.LAST: lambda vs: max(vs)[1],
    }[agg]
    assert result.ts_ns == sorted(buckets)
    assert result.columns["voltage_l1_v"] == pytest.approx(
        [fn(buckets[b]) for b in sorted(buckets)]
    )
    assert result.agg is agg and result.every_s == every_s
    assert set(everything.columns) == {"voltage_l1_v", "energy_import_kwh"}
    assert everything.columns["voltage_l1_v"] == pytest.approx(result.columns["voltage_l1_v"])


async def test_latest(stores: StoreFactory) -> None:
    readings = _meter("m1", 5)
    async with stores.open() as (store, _):
        assert await store.latest("m1") is None
        await store.write(readings)
        await store.write(_meter("m2", 9))
        latest = await store.latest("m1")
    assert latest is not None
    assert (latest.device_id, latest.kind, latest.seq) == ("m1", DeviceKind.ELECTRICITY, 4)
    assert latest.ts_ns == point_ts_ns(readings[4].ts_ns, 4)
    assert dict(latest.fields) == dict(readings[4].fields)
    assert latest.quality == "ok"


async def test_rewrite_overwrites_and_same_ns_readings_are_kept(stores: StoreFactory) -> None:
    readings = _meter("m1", 10)
    # Two different readings of one device with the very same ns timestamp.
    twins = [
        Reading("m1", DeviceKind.ELECTRICITY, BASE_NS + 100 * SEC, s, {"voltage_l1_v": v})
        for s, v in ((10, 1.0), (11, 2.0))
    ]
    async with stores.open() as (store, _):
        await store.write(readings + twins)
        await store.write(readings + twins)  # a replay after a lost acknowledgement
        result = await store.query("m1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert result.seq == list(range(12))
    assert result.columns["voltage_l1_v"][-2:] == [1.0, 2.0]


SPECIAL = [
    "with space",
    "com,ma",
    "equals=sign",
    'dq"uote',
    "sq'uote",
    "back\\slash",
    "Zähler €",
    "mixed ,=\"'\\ü x",
]


@pytest.mark.parametrize("name", SPECIAL)
async def test_special_names_round_trip(stores: StoreFactory, name: str, write_path: str) -> None:
    reading = Reading(
        name,
        DeviceKind.WATER,
        BASE_NS + 5 * SEC,
        1,
        {name: 1.5, "flow_m3h": -2.25},
        f"exception:{name}",
    )
    other = Reading(name + "x", DeviceKind.WATER, BASE_NS + 5 * SEC, 1, {name: 9.0})
    async with stores.open(site_id=name, profiles={name: name}) as (store, enc):
        await _write(store, enc, [reading, other], write_path)
        raw = await store.query(name, start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
        chosen = await store.query(
            name, fields=[name], start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS, every_s=60, agg="max"
        )
        latest = await store.latest(name)
    assert raw.columns == {name: [1.5], "flow_m3h": [-2.25]}
    assert raw.quality == [f"exception:{name}"]
    assert chosen.columns == {name: [1.5]}
    assert latest is not None and latest.device_id == name and latest.quality == reading.quality
    if stores.influx is not None:  # the tags themselves, read back by InfluxQL
        answer = influxql(
            stores.influx.url,
            stores.database,
            'SHOW TAG VALUES FROM "water" WITH KEY IN ("site", "profile", "device")',
        )
        values = {tuple(v) for s in answer["results"][0]["series"] for v in s["values"]}
        assert {("site", name), ("profile", name), ("device", name)} <= values


async def test_values_reaching_the_query_are_escaped(stores: StoreFactory) -> None:
    async with stores.open() as (store, _):
        await store.write(_meter("m1", 3))
        for device in ("m1' OR device != '", 'm1" OR "a"="a', "m1\\", "m1\n"):
            result = await store.query(device, start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
            assert len(result) == 0
        odd = await store.query(
            "m1",
            fields=['voltage_l1_v") FROM x --'],
            start_ns=BASE_NS,
            end_ns=BASE_NS + HOUR_NS,
            every_s=60,
        )
        assert odd.columns == {'voltage_l1_v") FROM x --': []}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_ns": 10, "end_ns": 10}, "empty time range"),
        ({"start_ns": 0, "end_ns": 10, "every_s": 0}, "every_s"),
        ({"start_ns": 0, "end_ns": 10, "every_s": math.nan}, "every_s"),
        ({"start_ns": 0, "end_ns": 10, "every_s": 1e-9}, "microsecond"),
        ({"start_ns": 0, "end_ns": 10, "agg": "median"}, "agg"),
        ({"start_ns": 0, "end_ns": 10, "fields": []}, "fields"),
        ({"start_ns": 0, "end_ns": 10, "fields": ["seq"]}, "seq"),
        ({"start_ns": "0; DROP", "end_ns": 10}, "integers"),
        ({"start_ns": 0, "end_ns": 10, "limit": 0}, "limit"),
    ],
)
async def test_invalid_queries_are_refused(
    stores: StoreFactory, kwargs: dict[str, object], message: str
) -> None:
    async with stores.open() as (store, _):
        with pytest.raises(QueryError, match=message):
            await store.query("m1", **kwargs)  # type: ignore[arg-type]
