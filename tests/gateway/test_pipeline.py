"""The pipeline persists every reading in order, whatever analysis or storage do."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from anomaly.finding import Finding
from drivers.reading import DeviceKind, Reading
from gateway.pipeline import Pipeline


def _reading(seq: int) -> Reading:
    return Reading(
        "d1",
        DeviceKind.WATER,
        ts_ns=seq * 1_000_000_000,
        seq=seq,
        fields={"volume_forward_m3": float(seq)},
    )


async def test_persist_outage_loses_nothing_and_keeps_order() -> None:
    stored: list[int] = []
    outage = {"left": 3}

    async def persist(batch: Sequence[Reading]) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise OSError("disk busy")
        stored.extend(r.seq for r in batch)

    pipe = Pipeline(persist=persist, batch_max=7, batch_wait_s=0.01, retry_max_s=0.05)
    task = asyncio.create_task(pipe.run())
    for i in range(100):
        pipe.submit(_reading(i))
        if i % 10 == 0:
            await asyncio.sleep(0)
    pipe.close()
    await asyncio.wait_for(task, 10)
    assert stored == list(range(100))
    assert pipe.stats.persist_failures == 3
    assert pipe.stats.readings_persisted == 100


async def test_failing_analysis_never_costs_a_reading() -> None:
    stored: list[int] = []
    seen: list[Finding] = []

    async def persist(batch: Sequence[Reading]) -> None:
        stored.extend(r.seq for r in batch)

    calls = {"n": 0}

    async def analyze(batch: Sequence[Reading]) -> Sequence[Finding]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("detector bug")
        return [Finding("t.x", ("d1",), 1.0, 0.5, batch[0].ts_ns, batch[-1].ts_ns, "test")]

    async def on_findings(findings: Sequence[Finding]) -> None:
        seen.extend(findings)

    pipe = Pipeline(
        persist=persist, analyze=analyze, on_findings=on_findings, batch_max=5, batch_wait_s=0.01
    )
    task = asyncio.create_task(pipe.run())
    for i in range(20):
        pipe.submit(_reading(i))
    pipe.close()
    await asyncio.wait_for(task, 10)
    assert stored == list(range(20))
    assert pipe.stats.analysis_failures == 1
    assert len(seen) == calls["n"] - 1 >= 3


async def test_close_on_idle_pipeline_returns_promptly() -> None:
    async def persist(batch: Sequence[Reading]) -> None:
        raise AssertionError("nothing to persist")

    pipe = Pipeline(persist=persist)
    task = asyncio.create_task(pipe.run())
    await asyncio.sleep(0.05)
    pipe.close()
    await asyncio.wait_for(task, 2)
    assert pipe.stats.batches == 0
