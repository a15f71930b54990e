"""Storage benchmark: encode cost per point, outbox append, and points/s through
outbox + forwarder into a local InfluxDB 1.x (started in a temporary directory).

Run: ``.venv/bin/python -m bench.run storage`` or
``.venv/bin/python bench/bench_storage.py [--points N] [--repeats R] [--batch B]``.
The benchmark process is pinned to one CPU (InfluxDB runs on the other), so
the gateway side is measured on one core. Prints medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.reading import DeviceKind, Reading
from gateway.storage import Forwarder, InfluxV1Store, Outbox, ReadingEncoder
from tests.services import influxdb_service

BASE_NS = 1_700_000_000 * 10**9
BATCH = 5000
DEVICES = 200


def make_readings(n: int, *, first_seq: int = 0) -> list[Reading]:
    """n electricity readings with 6 fields each, spread over DEVICES devices."""
    out = []
    for i in range(n):
        seq = first_seq + i // DEVICES
        out.append(
            Reading(
                f"meter-{i % DEVICES:04d}",
                DeviceKind.ELECTRICITY,
                BASE_NS + seq * 10**9 + i % DEVICES,
                seq,
                {
                    "voltage_l1_v": 230.0 + (i % 17) * 0.1,
                    "current_l1_a": 5.25 + (i % 13) * 0.01,
                    "power_total_w": 1207.5 + i % 101,
                    "power_factor": 0.97,
                    "frequency_hz": 50.01,
                    "energy_import_kwh": 12345.678 + seq * 0.001,
                },
            )
        )
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_encode(readings: list[Reading], repeats: int) -> tuple[float, float]:
    enc = ReadingEncoder(
        site_id="bench", profiles={r.device_id: "eastron_sdm630" for r in readings}
    )
    enc.line(readings[0])
    encode = [timed(lambda: [enc.line(r) for r in readings]) for _ in range(repeats)]
    body = ("\n".join(enc.line(r) for r in readings) + "\n").encode()
    compress = [timed(lambda: gzip.compress(body, compresslevel=1)) for _ in range(repeats)]
    n = len(readings)
    return statistics.median(encode) / n * 1e6, statistics.median(compress) / n * 1e6


async def bench_append(tmp: Path, readings: list[Reading], repeats: int) -> float:
    rates = []
    for r in range(repeats):
        box = await Outbox.open(
            tmp / f"append{r}.sqlite", max_bytes=2**34, encoder=ReadingEncoder(site_id="bench")
        )
        t0 = time.perf_counter()
        for i in range(0, len(readings), BATCH):
            await box.append_readings(readings[i : i + BATCH])
        rates.append(len(readings) / (time.perf_counter() - t0))
        await box.close()
    return statistics.median(rates)


async def bench_end_to_end(
    tmp: Path, url: str, readings: list[Reading], repeats: int, *, gzip_body: bool
) -> tuple[float, float]:
    """(points/s appending while forwarding, points/s draining a filled outbox)."""
    live, drain = [], []
    for r in range(repeats):
        encoder = ReadingEncoder(site_id=f"bench{r}")
        db = f"bench_{r}_{int(gzip_body)}"
        box = await Outbox.open(tmp / f"e2e{r}{gzip_body}.sqlite", max_bytes=2**34, encoder=encoder)
        store = InfluxV1Store(
            url=url, database=db, encoder=encoder, timeout_s=60, gzip_body=gzip_body
        )
        await store.ensure_database()
        fwd = Forwarder(box, store, batch_points=BATCH, idle_wait_s=0.01)
        task = asyncio.create_task(fwd.run())
        t0 = time.perf_counter()
        for i in range(0, len(readings), BATCH):
            await box.append_readings(readings[i : i + BATCH])
        while box.stats().entries:  # noqa: ASYNC110 (polling is the measurement's clock)
            await asyncio.sleep(0.001)
        live.append(len(readings) / (time.perf_counter() - t0))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Drain only: fill first (e.g. after an outage), then forward.
        for i in range(0, len(readings), BATCH):
            await box.append_readings(readings[i : i + BATCH])
        t0 = time.perf_counter()
        assert await fwd.drain(timeout_s=300)
        drain.append(len(readings) / (time.perf_counter() - t0))
        assert fwd.sent_points == 2 * len(readings)
        await box.close()
        await store.close()
    return statistics.median(live), statistics.median(drain)


class NullSink:
    """Acknowledges everything at once: measures the gateway side alone."""

    name = "null"

    async def write_gzip(self, body: bytes, *, points: int) -> None:
        return None


async def bench_null_sink(tmp: Path, readings: list[Reading], repeats: int) -> float:
    rates = []
    for r in range(repeats):
        box = await Outbox.open(
            tmp / f"null{r}.sqlite", max_bytes=2**34, encoder=ReadingEncoder(site_id="bench")
        )
        fwd = Forwarder(box, NullSink(), batch_points=BATCH, idle_wait_s=0.01)
        task = asyncio.create_task(fwd.run())
        t0 = time.perf_counter()
        for i in range(0, len(readings), BATCH):
            await box.append_readings(readings[i : i + BATCH])
        while box.stats().entries:  # noqa: ASYNC110 (polling is the measurement's clock)
            await asyncio.sleep(0.001)
        rates.append(len(readings) / (time.perf_counter() - t0))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await box.close()
    return statistics.median(rates)


def bench_influx_ceiling(url: str, readings: list[Reading], repeats: int) -> float:
    """InfluxDB's own ingest rate: pre-encoded gzip bodies posted in a bare loop."""
    enc = ReadingEncoder(site_id="ceiling")
    bodies = [
        gzip.compress(("\n".join(enc.line(r) for r in readings[i : i + BATCH]) + "\n").encode(), 1)
        for i in range(0, len(readings), BATCH)
    ]
    urllib.request.urlopen(
        urllib.request.Request(f"{url}/query?q=CREATE+DATABASE+ceiling", method="POST"), timeout=10
    ).close()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for body in bodies:
            req = urllib.request.Request(
                f"{url}/write?db=ceiling&precision=ns",
                data=body,
                method="POST",
                headers={"Content-Encoding": "gzip"},
            )
            urllib.request.urlopen(req, timeout=60).close()
        rates.append(len(readings) / (time.perf_counter() - t0))
    return statistics.median(rates)


def python_speed_ns() -> float:
    """ns per iteration of an empty Python loop: a yardstick for comparing machines."""
    best = min(timed(lambda: [None for _ in range(1_000_000)]) for _ in range(5))
    return best * 1000


def count_points(url: str, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": 'SELECT count("seq") FROM "electricity"'})
    with urllib.request.urlopen(f"{url}/query?{q}", timeout=60) as resp:
        import json

        answer = json.loads(resp.read())
    return int(answer["results"][0]["series"][0]["values"][0][1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000, help="points per append and send")
    args = parser.parse_args(argv)
    global BATCH  # noqa: PLW0603 (one knob for every stage)
    BATCH = args.batch
    original = os.sched_getaffinity(0)
    cpus = sorted(original)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        return _run(args, cpus)
    finally:
        os.sched_setaffinity(0, original)  # bench.run goes on with other benchmarks


def _run(args: argparse.Namespace, cpus: list[int]) -> int:
    readings = make_readings(args.points)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmpdir:
        tmp = Path(tmpdir)
        influx = influxdb_service(tmp / "influxdb")
        influx.start()
        if len(cpus) > 1 and influx.proc is not None:
            os.sched_setaffinity(influx.proc.pid, set(cpus[1:]))
        try:
            encode_us, gzip_us = bench_encode(readings[:50_000], args.repeats)
            append_pps = asyncio.run(bench_append(tmp, readings, args.repeats))
            null_pps = asyncio.run(bench_null_sink(tmp, readings, args.repeats))
            ceiling_pps = bench_influx_ceiling(influx.url, readings, args.repeats)
            live_gz, drain_gz = asyncio.run(
                bench_end_to_end(tmp, influx.url, readings, args.repeats, gzip_body=True)
            )
            live_raw, drain_raw = asyncio.run(
                bench_end_to_end(tmp, influx.url, readings, 1, gzip_body=False)
            )
            stored = count_points(influx.url, "bench_0_1")
        finally:
            influx.stop()
    assert stored == len(readings), f"InfluxDB holds {stored} of {len(readings)} points"
    rows = [
        (
            "encode (6 fields + quality + seq)",
            f"{encode_us:.2f} µs/point",
            f"{1e6 / encode_us:,.0f}",
        ),
        ("gzip level 1", f"{gzip_us:.2f} µs/point", f"{1e6 / gzip_us:,.0f}"),
        (
            "outbox append (encode+gzip+fsync)",
            f"{1e6 / append_pps:.2f} µs/point",
            f"{append_pps:,.0f}",
        ),
        ("outbox + forwarder -> null sink", f"{1e6 / null_pps:.2f} µs/point", f"{null_pps:,.0f}"),
        (
            "InfluxDB alone (pre-encoded bodies)",
            f"{1e6 / ceiling_pps:.2f} µs/point",
            f"{ceiling_pps:,.0f}",
        ),
        (
            "outbox + forwarder -> InfluxDB, live",
            f"{1e6 / live_gz:.2f} µs/point",
            f"{live_gz:,.0f}",
        ),
        ("forwarder drain of a full outbox", f"{1e6 / drain_gz:.2f} µs/point", f"{drain_gz:,.0f}"),
        ("live, gzip off (1 run)", f"{1e6 / live_raw:.2f} µs/point", f"{live_raw:,.0f}"),
        ("drain, gzip off (1 run)", f"{1e6 / drain_raw:.2f} µs/point", f"{drain_raw:,.0f}"),
    ]
    print(
        f"storage benchmark: {args.points:,} points x {args.repeats} runs (medians), "
        f"batch {BATCH}, gateway side pinned to CPU {cpus[0]}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'cost':>16}  {'points/s':>12}")
    for name, cost, rate in rows:
        print(f"{name:<{width}}  {cost:>16}  {rate:>12}")
    target = 100_000
    print(
        f"target >= {target:,} points/s through outbox + forwarder into InfluxDB: "
        f"{'met' if live_gz >= target else 'NOT met'} ({live_gz / target:.2f}x); "
        f"live / InfluxDB alone = {live_gz / ceiling_pps:.2f}; "
        f"gateway side alone = {null_pps / target:.2f}x target"
    )
    print(f"machine yardstick: empty Python loop {python_speed_ns():.0f} ns/iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
