"""API benchmark (run by hand; not collected by pytest). Prints a table of medians.

Run: ``.venv/bin/python -m bench.bench_api (or: python -m bench.run api) [--repeats R]``.

- key lookup: `KeyRing.authenticate` with 3 and 100 configured keys;
- in-process (ASGI) request latency: ``GET /api/v1/alerts`` (a page of 50 out
  of 1000 alerts), ``GET /api/v1/devices/n1``, ``GET /api/v1/devices/n1/readings``
  (one day raw at 10 s: 8640 rows x 2 fields, and the same day at 5 min);
- event stream over real uvicorn: time from an alert change's commit to its
  arrival at 1 and at 20 open streams (the last of them to receive it).

Lives here rather than in bench/ because bench/ is outside this part's paths.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from drivers.reading import DeviceKind, Reading, now_ns
from gateway.api.auth import KeyRing, hash_key
from gateway.config import ApiKeySettings, Role
from tests.gateway.api.conftest import (
    NORTH,
    ServerThread,
    World,
    asgi_client,
    auth,
    build_world,
    cheating_finding,
    close_world,
)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_keys(repeats: int) -> list[tuple[str, float]]:
    rows = []
    for n in (3, 100):
        ring = KeyRing(
            [
                ApiKeySettings(name=f"k{i}", role=Role.INSPECTOR, sha256=hash_key(f"key-{i}"))
                for i in range(n)
            ]
        )
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(1000):
                ring.authenticate(f"key-{n - 1}")
            runs.append((time.perf_counter() - t) / 1000)
        rows.append((f"key lookup, {n} keys (us)", statistics.median(runs) * 1e6))
    return rows


async def bench_requests(repeats: int) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        world = await build_world(Path(tmp))
        try:
            for i in range(1000):
                world.alerts.ingest(
                    cheating_finding("n1", detector=f"bench.d{i}"),
                    site=NORTH,
                    evidence_digest="0" * 64,
                )
            end = now_ns()
            day = [
                Reading(
                    "n1",
                    DeviceKind.DISPENSER_NOZZLE,
                    end - (8640 - i) * 10 * 10**9,
                    1000 + i,
                    {"totalizer_volume_l": 5000.0 + i, "flow_rate_lpm": 30.0},
                )
                for i in range(8640)
            ]
            await world.store.write(day)
            start = end - 86_400 * 10**9 + 1
            cases = [
                ("GET alerts, page of 50 of 1000 (ms)", "/api/v1/alerts?limit=50"),
                ("GET device detail (ms)", "/api/v1/devices/n1"),
                (
                    "GET readings, 1 day raw, 8640 rows (ms)",
                    f"/api/v1/devices/n1/readings?start_ns={start}&end_ns={end}",
                ),
                (
                    "GET readings, 1 day at 5 min (ms)",
                    f"/api/v1/devices/n1/readings?start_ns={start}&end_ns={end}&every_s=300",
                ),
            ]
            rows = []
            async with asgi_client(world.app) as client:
                for label, url in cases:
                    samples = []
                    for _ in range(repeats):
                        t = time.perf_counter()
                        response = await client.get(url, headers=auth("admin"))
                        samples.append(time.perf_counter() - t)
                        assert response.status_code == 200, response.text
                    rows.append((label, _median_ms(samples)))
            rows += await bench_stream(world, repeats)
            return rows
        finally:
            await close_world(world)


async def bench_stream(world: World, repeats: int) -> list[tuple[str, float]]:
    rows = []
    with ServerThread(world.app) as server:
        for n_streams in (1, 20):
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                streams = []
                for _ in range(n_streams):
                    cm = client.stream("GET", "/api/v1/alerts/stream", headers=auth("admin"))
                    response = await cm.__aenter__()
                    lines = response.aiter_lines()
                    while (await anext(lines)) != ": stream open":
                        pass
                    streams.append((cm, lines))
                samples = []
                for i in range(repeats):
                    await asyncio.to_thread(
                        world.alerts.ingest,
                        cheating_finding("n1", detector=f"bench.s{n_streams}.{i}"),
                        site=NORTH,
                        evidence_digest="0" * 64,
                    )
                    committed = time.perf_counter()
                    for _, lines in streams:
                        while not (await anext(lines)).startswith("data:"):
                            pass
                    samples.append(time.perf_counter() - committed)
                for cm, _ in streams:
                    await cm.__aexit__(None, None, None)
            rows.append((f"commit -> {n_streams} stream(s) received (ms)", _median_ms(samples)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows = bench_keys(args.repeats) + asyncio.run(bench_requests(args.repeats))
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  median")
    for label, value in rows:
        print(f"{label:<{width}}  {value:8.3f}")


if __name__ == "__main__":
    main()
