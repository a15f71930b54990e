"""The forwarder: moves outbox entries to the store, in order, deleting only what was acknowledged.

One loop: take the oldest entries (up to `batch_points` points), send them as
one gzip body, and on success delete them from the outbox. Nothing newer is
sent before an older entry was acknowledged, so the store sees entries in the
order they were taken.

Failure modes handled: the store being away, overloaded or refusing our
credentials (`SinkUnavailable`): the entries stay queued and the loop waits
with capped, jittered exponential backoff; the failure is logged once and the
recovery once. A payload the store refuses for good (`SinkRejected`, a corrupt
body): a multi-entry batch is retried entry by entry so one bad entry cannot
hold back the others, and the refused entry is quarantined in the outbox
(kept and counted), never silently deleted. Any other exception is logged,
counted and backed off like an outage, so the loop never dies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.storage.errors import LineProtocolError, SinkRejected, SinkUnavailable
from gateway.storage.outbox import Outbox, OutboxEntry

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0


class GzipSink(Protocol):
    """Where the forwarder sends entries (every `ReadingStore` is one)."""

    name: str

    async def write_gzip(self, body: bytes, *, points: int) -> None: ...


class ForwarderState(StrEnum):
    IDLE = "idle"
    SENDING = "sending"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    state: ForwarderState
    sent_points: int
    sent_batches: int
    errors: int
    rejected_entries: int
    consecutive_failures: int
    last_error: str | None
    last_success_ns: int | None
    write_rate_pps: float
    """Points acknowledged per second over the last minute."""


class Backoff:
    """Capped exponential backoff with jitter: delay n is in [d/2, d], d = min(cap, base*2^n)."""

    def __init__(
        self, *, initial_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    def next_delay_s(self) -> float:
        d = min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return d / 2 + self._rng.uniform(0, d / 2)

    def reset(self) -> None:
        self.failures = 0


class Forwarder:
    """Forwards an `Outbox` to a `GzipSink` until cancelled."""

    def __init__(
        self,
        outbox: Outbox,
        sink: GzipSink,
        *,
        batch_points: int = 5000,
        idle_wait_s: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.batch_points = batch_points
        self.idle_wait_s = idle_wait_s
        self.backoff = backoff or Backoff()
        self.state = ForwarderState.IDLE
        self.sent_points = 0
        self.sent_batches = 0
        self.errors = 0
        self.rejected_entries = 0
        self.last_error: str | None = None
        self.last_success_ns: int | None = None
        self._failing = False
        self._window: deque[tuple[float, int]] = deque()

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Forward forever (until cancelled)."""
        try:
            while True:
                sent = await self.forward_once()
                if sent == 0 and self.state is not ForwarderState.BACKOFF:
                    self.state = ForwarderState.IDLE
                    await self.outbox.wait_for_entries(self.idle_wait_s)
        finally:
            self.state = ForwarderState.STOPPED

    async def drain(self, *, timeout_s: float) -> bool:
        """Forward until the outbox is empty or `timeout_s` passed; True if empty."""
        deadline = time.monotonic() + timeout_s
        while self.outbox.stats().entries:
            if time.monotonic() >= deadline:
                return False
            try:
                await asyncio.wait_for(self.forward_once(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return True

    async def forward_once(self) -> int:
        """Send one batch. Returns points acknowledged (0: nothing queued, or failed)."""
        entries = await self.outbox.peek(max_points=self.batch_points)
        if not entries:
            return 0
        self.state = ForwarderState.SENDING
        try:
            delivered = await self._send(entries)
        except SinkUnavailable as exc:
            await self._failed(exc)
            return 0
        except asyncio.CancelledError:
            await asyncio.shield(self.outbox.release())
            raise
        except Exception as exc:  # never let the loop die; treat like an outage
            log.exception("forwarder: unexpected error", extra={"sink": self.sink.name})
            await self._failed(exc)
            return 0
        return delivered

    async def _send(self, entries: Sequence[OutboxEntry]) -> int:
        body = b"".join(e.payload for e in entries)
        points = sum(e.points for e in entries)
        try:
            await self.sink.write_gzip(body, points=points)
        except (SinkRejected, LineProtocolError) as exc:
            if len(entries) == 1:
                await self._reject(entries[0], exc)
                return 0
            return await self._send_one_by_one(entries)
        # Counted when the store acknowledged, before the (durable) outbox delete.
        self._succeeded(points)
        await self.outbox.ack([e.id for e in entries])
        return points

    async def _send_one_by_one(self, entries: Sequence[OutboxEntry]) -> int:
        delivered = 0
        for entry in entries:
            try:
                await self.sink.write_gzip(entry.payload, points=entry.points)
            except (SinkRejected, LineProtocolError) as exc:
                await self._reject(entry, exc)
                continue
            self._succeeded(entry.points)
            await self.outbox.ack([entry.id])
            delivered += entry.points
        return delivered

    async def _reject(self, entry: OutboxEntry, exc: Exception) -> None:
        self.rejected_entries += 1
        self.errors += 1
        self.last_error = str(exc)
        log.error(
            "store refused an outbox entry; quarantined",
            extra={
                "sink": self.sink.name,
                "entry": entry.id,
                "points": entry.points,
                "error": str(exc),
            },
        )
        await self.outbox.quarantine(entry.id, str(exc))

    async def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = str(exc)
        if not self._failing:
            self._failing = True
            log.warning(
                "store unavailable; keeping readings in the outbox and retrying",
                extra={"sink": self.sink.name, "error": str(exc)},
            )
        await self.outbox.release()
        self.state = ForwarderState.BACKOFF
        await asyncio.sleep(self.backoff.next_delay_s())

    def _succeeded(self, points: int) -> None:
        if self._failing:
            self._failing = False
            log.info(
                "store reachable again; forwarding the outbox",
                extra={"sink": self.sink.name, "queued_points": self.outbox.stats().points},
            )
        self.backoff.reset()
        self.state = ForwarderState.SENDING
        if points:
            self.sent_points += points
            self.sent_batches += 1
            self.last_success_ns = time.time_ns()
            self._window.append((time.monotonic(), points))

    # --- metrics -----------------------------------------------------------------------

    def write_rate_pps(self) -> float:
        now = time.monotonic()
        while self._window and now - self._window[0][0] > RATE_WINDOW_S:
            self._window.popleft()
        if not self._window:
            return 0.0
        span = max(1.0, now - self._window[0][0])
        return sum(p for _, p in self._window) / span

    def stats(self) -> ForwarderStats:
        return ForwarderStats(
            state=self.state,
            sent_points=self.sent_points,
            sent_batches=self.sent_batches,
            errors=self.errors,
            rejected_entries=self.rejected_entries,
            consecutive_failures=self.backoff.failures,
            last_error=self.last_error,
            last_success_ns=self.last_success_ns,
            write_rate_pps=self.write_rate_pps(),
        )
