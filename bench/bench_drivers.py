"""Drivers benchmark: Modbus TCP polling throughput, CPU cost and schedule accuracy.

Cases: 100 and 1,000 simulated Modbus TCP devices of 30 fields each (f32,
u32 word-swapped, scaled i16, u64: 2 read blocks per poll), polled every
1 s, each on its own connection as separate meters are. The devices are
served by the lightweight asyncio server of the driver tests
(`tests.drivers.peers.FaultPeer`) in a child process pinned to CPU 1; the
pollers run in this process pinned to CPU 0, so CPU time is the gateway's.

Reported per case (median over `--repeats`):
- fields/s delivered (wall) -- the offered load is devices x 30 per s;
- fields per CPU-second -- the capacity of one core (target >= 50,000);
- CPU s per 10,000 fields;
- the test server's CPU use (share of one core), to tell its limits from ours;
- p50/p99 deviation of poll times from each device's own schedule (the
  reading's timestamp, taken when the last response arrived, minus the
  device's due time: its 1 s boundary plus its phase,
  `PolledDevice.poll_phase_s`; target p99 < 50 ms at 1,000 devices), and the
  start lag (poll started vs due time), which separates the gateway's
  scheduling from the server's response time.
Also the codec alone (decode_from per field) for the ratio.

Run: ``.venv/bin/python bench/bench_drivers.py [--seconds S] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.bus import run_bus
from drivers.codec import DataType, Order, compile_decoder, decode_from, registers_to_bytes
from drivers.links import PolledDevice, TcpLink
from drivers.planner import plan_reads
from drivers.profiles import ModbusField, Profile, ProfileProtocol
from drivers.reading import DeviceKind, Reading
from drivers.status import BusStatus
from tests.drivers.peers import FaultPeer, Unit, register_image

FIELDS = 30
INTERVAL_S = 1.0
UNITS_PER_GATEWAY = 125
IN_FLIGHT = 125  # every unit behind a gateway connection may have a request out


def bench_profile() -> Profile:
    """30 fields of mixed types in two blocks (holding and input registers)."""
    fields: list[ModbusField] = []
    addr = {3: 0, 4: 0}
    kinds = [
        (4, DataType.F32, Order.ABCD, 1.0),
        (3, DataType.U32, Order.CDAB, 0.01),
        (4, DataType.I16, Order.ABCD, 0.1),
        (3, DataType.U64, Order.ABCD, 0.001),
        (4, DataType.F32, Order.DCBA, 1.0),
    ]
    for i in range(FIELDS):
        fc, dt, order, scale = kinds[i % len(kinds)]
        fields.append(
            ModbusField(name=f"f{i:02d}", function=fc, address=addr[fc], data_type=dt,  # type: ignore[arg-type]
                        order=order, scale=scale)
        )
        addr[fc] += dt.registers
    return Profile(name="bench30", kind=DeviceKind.ELECTRICITY, protocol=ProfileProtocol.MODBUS,
                   fields=tuple(fields))


def _serve(port_queue: mp.Queue[int], stop: mp.Event) -> None:  # type: ignore[type-arg]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    profile = bench_profile()
    image = register_image(profile, {f.name: 12.5 for f in profile.fields})

    async def main() -> None:
        async with FaultPeer({u: Unit(image) for u in range(1, UNITS_PER_GATEWAY + 1)}) as peer:
            port_queue.put(peer.port)
            while not stop.is_set():  # noqa: ASYNC110 - a process event, not an asyncio one
                await asyncio.sleep(0.2)

    asyncio.run(main())


def _proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux /proc)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _poll_case(
    port: int,
    n_devices: int,
    seconds: float,
    *,
    mode: str = "device",
    server_pid: int | None = None,
) -> dict[str, float]:
    """`mode` ``device``: one link (connection) per device, as separate meters are;
    ``gateway``: links of up to 125 unit ids, requests pipelined (IN_FLIGHT at once)."""
    profile = bench_profile()
    samples: list[tuple[float, int, float]] = []
    status = BusStatus()  # shared by all buses: device ids are unique
    phase_s: dict[str, float] = {}

    def sink(r: Reading) -> None:
        lag = status.devices[r.device_id].last_start_lag_s or 0.0
        # seconds past the device's own due time (its boundary plus its phase)
        late_s = (r.ts_ns / 1e9 - phase_s[r.device_id]) % INTERVAL_S
        samples.append((late_s, len(r.fields) if r.ok else -1, lag))

    def dev(i: int, unit: int) -> PolledDevice:
        return PolledDevice(f"d{i}", profile, unit, poll_interval_s=INTERVAL_S, timeout_s=0.8,
                            first_seq=0)

    if mode == "device":
        buses = [(TcpLink("127.0.0.1", port, timeout_s=0.8), [dev(i, 1)])
                 for i in range(n_devices)]
    else:
        buses = []
        for start in range(0, n_devices, UNITS_PER_GATEWAY):
            ids = range(start, min(n_devices, start + UNITS_PER_GATEWAY))
            link = TcpLink("127.0.0.1", port, timeout_s=0.8, max_in_flight=IN_FLIGHT)
            buses.append((link, [dev(i, i - start + 1) for i in ids]))
    phase_s.update((d.id, d.poll_phase_s) for _, devs in buses for d in devs)
    tasks = [asyncio.create_task(run_bus(link, devs, sink, status=status)) for link, devs in buses]
    # warm up until (nearly) every device has answered once: 1,000 connects
    # on a busy box take a while; then start measuring mid-interval
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        up = sum(1 for st in status.devices.values() if st.last_ok_ns is not None)
        if up >= 0.98 * n_devices:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.5 - (time.time() % 1.0))
    samples.clear()
    cpu0, wall0, srv0 = time.process_time(), time.perf_counter(), _proc_cpu_s(server_pid)
    await asyncio.sleep(seconds)
    cpu1, wall1, srv1 = time.process_time(), time.perf_counter(), _proc_cpu_s(server_pid)
    taken = list(samples)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok = [s for s in taken if s[1] >= 0]
    fields = sum(s[1] for s in ok)
    dev_ms = sorted(late_s * 1000 for late_s, _, _ in ok)
    lag_ms = sorted(lag * 1000 for _, _, lag in ok)
    cpu = cpu1 - cpu0
    return {
        "fields_per_s": fields / (wall1 - wall0),
        "fields_per_cpu_s": fields / cpu if cpu else float("nan"),
        "cpu_per_10k": cpu / fields * 10_000 if fields else float("nan"),
        "p50_ms": statistics.median(dev_ms) if dev_ms else float("nan"),
        "p99_ms": dev_ms[int(0.99 * (len(dev_ms) - 1))] if dev_ms else float("nan"),
        "lag_p50_ms": statistics.median(lag_ms) if lag_ms else float("nan"),
        "lag_p99_ms": lag_ms[int(0.99 * (len(lag_ms) - 1))] if lag_ms else float("nan"),
        "bad": len(taken) - len(ok),
        "server_cpu": (srv1 - srv0) / (wall1 - wall0),
    }


def codec_fields_per_s(*, compiled: bool) -> float:
    profile = bench_profile()
    blocks = plan_reads(profile.fields)
    image = register_image(profile, {f.name: 12.5 for f in profile.fields})
    bufs = [registers_to_bytes([image[b.function][a] for a in range(b.address, b.end)])
            for b in blocks]
    n = 2000
    t0 = time.perf_counter()
    if compiled:
        decoders = [[(compile_decoder(f), off) for f, off in zip(b.fields, b.offsets, strict=True)]
                    for b in blocks]
        for _ in range(n):
            for decs, buf in zip(decoders, bufs, strict=True):
                for dec, off in decs:
                    dec(buf, off)
    else:
        for _ in range(n):
            for b, buf in zip(blocks, bufs, strict=True):
                for f, off in zip(b.fields, b.offsets, strict=True):
                    decode_from(buf, off, f)
    return n * FIELDS / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, nargs="*", default=[100, 1000])
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})
    # 1,000 connections on each side; a slow poll is expected here, not news
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    logging.getLogger("meterwatch.drivers").setLevel(logging.ERROR)

    ctx = mp.get_context("fork")
    ports: mp.Queue[int] = ctx.Queue()
    stop = ctx.Event()
    server = ctx.Process(target=_serve, args=(ports, stop), daemon=True)
    server.start()
    port = ports.get(timeout=20)
    rows = []
    try:
        codec = statistics.median(codec_fields_per_s(compiled=False) for _ in range(args.repeats))
        fast = statistics.median(codec_fields_per_s(compiled=True) for _ in range(args.repeats))
        for mode in ("device", "gateway"):
            for n in args.devices:
                runs = [asyncio.run(_poll_case(port, n, args.seconds, mode=mode,
                                               server_pid=server.pid))
                        for _ in range(args.repeats)]
                rows.append((mode, n, {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    finally:
        stop.set()
        server.join(timeout=10)
    print(f"codec alone, 30 mixed fields: decode_from {codec:,.0f} fields/s, compiled "
          f"decoders (what the poller uses) {fast:,.0f} fields/s, one core")
    print(f"Modbus TCP polling, {FIELDS} fields/device, {INTERVAL_S:g} s interval, "
          f"medians of {args.repeats} x {args.seconds:g} s; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    print("links: device = one connection per device; gateway = 125 unit ids per "
          "connection, requests pipelined")
    head = (f"{'links':>8} {'devices':>8} {'fields/s':>10} {'fields/CPU-s':>13} {'CPU s/10k':>10} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'lag p50':>8} {'lag p99':>8} {'bad':>5} "
            f"{'server CPU':>10}")
    print(head)
    print("-" * len(head))
    for mode, n, m in rows:
        print(f"{mode:>8} {n:>8} {m['fields_per_s']:>10,.0f} {m['fields_per_cpu_s']:>13,.0f} "
              f"{m['cpu_per_10k']:>10.3f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f} "
              f"{m['lag_p50_ms']:>8.1f} {m['lag_p99_ms']:>8.1f} "
              f"{m['bad']:>5.0f} {m['server_cpu']:>9.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
