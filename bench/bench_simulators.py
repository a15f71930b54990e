"""Simulator benchmark: offline generation speed and Modbus serving throughput.

Run: ``.venv/bin/python bench/bench_simulators.py [--repeats R] [--days D]``.
Prints medians over the repeats:
- offline generation of the standard site (15 devices) and of a 60-device
  site (four standard sites side by side) for D simulated days;
- the serving engine's cost per device sample;
- Modbus TCP requests per second from the simulated site (one connection,
  pymodbus client, one request in flight; 70 input registers of an SDM630).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from simulators.catalogue import standard_devices, standard_groups
from simulators.engine import SimClock, SimEngine
from simulators.offline import generate
from simulators.serve import serve
from simulators.spec import NS_PER_S, GroupSpec, Scenario


def big_site(copies: int) -> Scenario:
    devices, groups = [], []
    for k in range(copies):
        devices += [replace(d, id=f"{d.id}.{k}", unit_id=None) for d in standard_devices()]
        groups += [
            GroupSpec(f"{g.id}.{k}", g.type, f"{g.reference}.{k}",
                      tuple(f"{m}.{k}" for m in g.members), g.technical_loss_pct)
            for g in standard_groups()
        ]
    return Scenario(name=f"standard x{copies}", description="", devices=tuple(devices),
                    groups=tuple(groups))


def median_s(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def modbus_rps(n: int) -> float:
    async with serve("honest", speed=0.0, start_ns=1_780_272_000 * NS_PER_S) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.modbus_port, timeout=2)
        await client.connect()
        t0 = time.perf_counter()
        for _ in range(n):
            await client.read_input_registers(0, count=70, device_id=22)
        elapsed = time.perf_counter() - t0
        client.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    rows = []
    small = median_s(lambda: generate("honest", seed=1, days=args.days), args.repeats)
    n_small = sum(s.ts_ns.size for s in generate("honest", seed=1, days=1).devices.values())
    rows.append((f"offline: standard site, 15 devices, {args.days} d", f"{small:.2f} s",
                 f"{n_small * args.days / small / 1e3:.0f} k readings/s"))
    site = big_site(4)
    big = median_s(lambda: generate(site, seed=1, days=args.days), args.repeats)
    rows.append((f"offline: 60 devices, {args.days} d", f"{big:.2f} s",
                 f"{4 * n_small * args.days / big / 1e3:.0f} k readings/s"))
    engine = SimEngine(site, seed=1, clock=SimClock(site.start_ns, speed=0.0))
    engine.sample("meter-1.0")
    t = median_s(lambda: [engine.sample("meter-1.0") for _ in range(10_000)], args.repeats)
    rows.append(("engine: one device sample", f"{t / 10_000 * 1e6:.1f} us", ""))
    rps = statistics.median(asyncio.run(modbus_rps(2000)) for _ in range(args.repeats))
    rows.append(("Modbus TCP, 70 regs, 1 in flight", f"{1e3 / rps:.2f} ms", f"{rps:.0f} req/s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>10}  rate")
    for name, med, rate in rows:
        print(f"{name:<{width}}  {med:>10}  {rate}")


if __name__ == "__main__":
    main()
