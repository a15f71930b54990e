"""The pipeline: readings from every driver, in batches, to storage and analysis.

Drivers call `Pipeline.submit` for every reading (it never blocks). The
pipeline task takes what has queued up (at most `batch_max`, waiting at most
`batch_wait_s` for more), then for each batch, in this order:

1. `persist(batch)`: the durable outbox append. A reading counts as taken only
   after this returns; if it raises, the batch is kept and retried, and the
   queue keeps filling (nothing is dropped in memory).
2. `analyze(batch)`: the anomaly stage; returns findings, which go to
   `on_findings` (alerts, ledger, delivery).

Failure modes handled: a failing persist (retried with capped backoff, logged
once per outage), a failing analysis or alert stage (logged, the batch is
still persisted: analysis must never cost a reading), and shutdown
(`close()` stops intake; `run()` returns after the queue is drained).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from anomaly.finding import Finding
from drivers.reading import Reading

log = logging.getLogger("meterwatch.pipeline")

PersistFn = Callable[[Sequence[Reading]], Awaitable[None]]
AnalyzeFn = Callable[[Sequence[Reading]], Awaitable[Sequence[Finding]]]
FindingsFn = Callable[[Sequence[Finding]], Awaitable[None]]


@dataclass(slots=True)
class PipelineStats:
    readings_in: int = 0
    readings_persisted: int = 0
    batches: int = 0
    findings: int = 0
    persist_failures: int = 0
    analysis_failures: int = 0
    last_batch_monotonic: float = 0.0


class Pipeline:
    """Batches readings and hands them to storage and analysis, in that order."""

    def __init__(
        self,
        *,
        persist: PersistFn,
        analyze: AnalyzeFn | None = None,
        on_findings: FindingsFn | None = None,
        batch_max: int = 5000,
        batch_wait_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self._persist = persist
        self._analyze = analyze
        self._on_findings = on_findings
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self._retry_max_s = retry_max_s
        self._queue: asyncio.Queue[Reading] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._persisted = asyncio.Condition()
        self.stats = PipelineStats()
        self._rate = _Rate()

    # -- intake ---------------------------------------------------------------------

    def submit(self, reading: Reading) -> None:
        """Queue one reading. Never blocks; safe to call from driver callbacks."""
        self._queue.put_nowait(reading)
        self.stats.readings_in += 1

    def position(self) -> int:
        """A mark for 'every reading submitted so far' (see `reached`)."""
        return self.stats.readings_in

    async def reached(self, position: int) -> None:
        """Return once every reading submitted before `position` is persisted.

        Batches are persisted in submission order, so a count is enough. The MQTT
        driver acknowledges a message to the broker only after this returns.
        """
        async with self._persisted:
            await self._persisted.wait_for(lambda: self.stats.readings_persisted >= position)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def readings_per_s(self) -> float:
        """Persisted readings per second over the last ~10 s."""
        return self._rate.per_s()

    async def process_now(self, batch: Sequence[Reading]) -> None:
        """Persist and analyse one batch directly, bypassing the queue (history replay).

        Call it only before `run()` starts or from the same task, so batches stay in order.
        """
        self.stats.readings_in += len(batch)
        await self._persist_with_retry(list(batch))
        await self._analyse(list(batch))

    def close(self) -> None:
        """Stop waiting for new readings; `run()` returns once the queue is drained."""
        self._closed.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                if self._closed.is_set() and self._queue.empty():
                    return
                continue
            await self._persist_with_retry(batch)
            await self._analyse(batch)

    async def _next_batch(self) -> list[Reading]:
        batch: list[Reading] = []
        if self._queue.empty():
            if self._closed.is_set():
                return batch
            getter = asyncio.ensure_future(self._queue.get())
            closer = asyncio.ensure_future(self._closed.wait())
            done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            closer.cancel()
            if getter in done:
                batch.append(getter.result())
            else:
                getter.cancel()
                # A reading may have arrived in the same tick as the cancel.
                if getter.done() and not getter.cancelled():
                    batch.append(getter.result())
                return batch
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_max:
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(batch) >= self._batch_max or remaining <= 0 or self._closed.is_set():
                break
            await asyncio.sleep(min(remaining, 0.02))
        return batch

    async def _persist_with_retry(self, batch: list[Reading]) -> None:
        delay = 0.1
        failing = False
        while True:
            try:
                await self._persist(batch)
            except Exception as exc:
                self.stats.persist_failures += 1
                if not failing:
                    log.error(
                        "cannot persist readings; holding them in memory and retrying",
                        extra={"batch": len(batch), "error": repr(exc)},
                    )
                    failing = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, self._retry_max_s)
                continue
            if failing:
                log.info("persisting readings again", extra={"batch": len(batch)})
            self.stats.readings_persisted += len(batch)
            async with self._persisted:
                self._persisted.notify_all()
            self.stats.batches += 1
            self.stats.last_batch_monotonic = time.monotonic()
            self._rate.add(len(batch))
            return

    async def _analyse(self, batch: list[Reading]) -> None:
        if self._analyze is None:
            return
        try:
            findings = await self._analyze(batch)
            if findings and self._on_findings is not None:
                self.stats.findings += len(findings)
                await self._on_findings(findings)
        except Exception:
            self.stats.analysis_failures += 1
            log.exception("analysis of a batch failed; the readings are stored regardless")


class _Rate:
    """Events per second over a sliding window of one-second buckets."""

    def __init__(self, window_s: int = 10) -> None:
        self._window_s = window_s
        self._buckets: dict[int, int] = {}

    def add(self, n: int) -> None:
        now = int(time.monotonic())
        self._buckets[now] = self._buckets.get(now, 0) + n
        for key in [k for k in self._buckets if k <= now - self._window_s]:
            del self._buckets[key]

    def per_s(self) -> float:
        now = int(time.monotonic())
        total = sum(v for k, v in self._buckets.items() if k > now - self._window_s)
        return total / self._window_s
