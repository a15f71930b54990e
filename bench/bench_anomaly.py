"""Throughput and memory of the whole anomaly engine.

Electricity meters (voltages, currents, power, import/export registers,
event counters, device clock: 13 fields) polled every 60 s for two hours,
grouped in feeders of 20 meters, fed in batches of 10 polls of every device.
Prints readings/s (median of several runs) and state bytes per device, for
1,000 and 10,000 devices. Then the tank step scan (`anomaly.tankstep`), which
a tank group runs once per period over its level points: milliseconds per
scan of a full ring (8,192 points, 4 nozzles). Run:
`.venv/bin/python -m bench.bench_anomaly`.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from anomaly.batch import Batch
from anomaly.engine import DeviceModel, Engine, GroupModel
from anomaly.tanklevel import RING_POINTS
from anomaly.tankstep import scan_steps

NS = 1_000_000_000
T0 = 1_772_409_600 * NS
POLL_S = 60
POLLS = 120
POLLS_PER_BATCH = 10
GROUP = 20


def site(n: int) -> tuple[list[DeviceModel], list[GroupModel]]:
    devices = [DeviceModel(f"m{i}", "electricity", 1.0) for i in range(n)]
    groups = []
    for g in range(n // GROUP):
        ref, *members = (f"m{i}" for i in range(g * GROUP, (g + 1) * GROUP))
        groups.append(GroupModel(f"f{g}", "feeder", ref, tuple(members), 3.0))
    return devices, groups


def batches(engine: Engine, n: int, seed: int = 0) -> list[Batch]:
    rng = np.random.default_rng(seed)
    idx = np.array([engine.index(f"m{i}") for i in range(n)], np.int32)
    base_w = rng.uniform(200, 3000, n)
    energy = rng.uniform(1000, 50000, n)
    out = []
    for b in range(POLLS // POLLS_PER_BATCH):
        k = POLLS_PER_BATCH
        polls = np.arange(b * k, (b + 1) * k)
        ts = (T0 + np.repeat(polls, n) * POLL_S * NS).astype(np.int64)
        p = np.tile(base_w, k) * rng.lognormal(0, 0.2, n * k)
        e = np.repeat(energy[None, :], k, axis=0)
        e = e + np.cumsum(p.reshape(k, n), axis=0) * POLL_S / 3.6e6
        energy = e[-1]
        v = 230 + rng.normal(0, 1, (3, n * k))
        fields = {
            "voltage_l1_v": v[0],
            "voltage_l2_v": v[1],
            "voltage_l3_v": v[2],
            "current_l1_a": p / 3 / v[0],
            "current_l2_a": p / 3 / v[1],
            "current_l3_a": p / 3 / v[2],
            "power_total_w": p,
            "energy_import_kwh": np.round(e.ravel(), 2),
            "energy_export_kwh": np.zeros(n * k),
            "magnet_events": np.zeros(n * k),
            "cover_events": np.zeros(n * k),
            "event_counter": np.ones(n * k),
            "device_clock_s": ts / NS,
        }
        out.append(Batch(np.tile(idx, k), ts, np.ones(n * k, bool), fields))
    return out


def measure(n: int, runs: int) -> tuple[float, float, int]:
    rates = []
    mem = 0
    for r in range(runs):
        devices, groups = site(n)
        engine = Engine(devices, groups)
        data = batches(engine, n, seed=r)
        total = sum(len(b) for b in data)
        t0 = time.perf_counter()
        for b in data:
            engine.process(b)
        rates.append(total / (time.perf_counter() - t0))
        mem = engine.memory_bytes()
    return statistics.median(rates), mem / n, total


def scan_ms(runs: int, *, nozzles: int = 4) -> float:
    """Median milliseconds of one step scan over a full ring of level points."""
    rng = np.random.default_rng(0)
    n = RING_POINTS
    seg = np.repeat(np.arange(n // 190 + 1), 190)[:n].astype(np.int64)
    sells = rng.integers(0, nozzles + 2, n)
    dx = np.zeros((n, nozzles))
    rows = np.flatnonzero(sells < nozzles)
    dx[rows, sells[rows]] = rng.uniform(20, 80, len(rows))
    c = np.zeros((n, nozzles + 1))
    first = np.r_[True, seg[1:] != seg[:-1]]
    for i in range(1, n):
        if not first[i]:
            c[i, :nozzles] = c[i - 1, :nozzles] + dx[i]
            c[i, nozzles] = c[i - 1, nozzles] + 0.12
    y = c[:, :nozzles] @ np.full(nozzles, -0.001) + rng.normal(0, 1.6, n)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        scan_steps(c, y, seg, min_side=30)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    runs = int(args[0]) if args else 5
    print(
        f"anomaly engine, electricity meters, 13 fields, feeders of {GROUP}, "
        f"batches of {POLLS_PER_BATCH} polls; median of {runs} runs"
    )
    print(f"{'devices':>8} {'readings/run':>13} {'readings/s':>12} {'state bytes/device':>19}")
    for n in (1_000, 10_000):
        rate, per_dev, total = measure(n, runs)
        print(f"{n:>8} {total:>13,} {rate:>12,.0f} {per_dev:>19,.0f}")
    print(
        f"\ntank step scan, {RING_POINTS:,} level points, 4 nozzles: "
        f"{scan_ms(max(runs, 5) * 4):.1f} ms (median), once per tank and period"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
