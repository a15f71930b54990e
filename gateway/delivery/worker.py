"""The per-target delivery loop: oldest first, retried with capped jittered backoff.

Failure modes handled: a target that fails (retried with full-jitter
exponential backoff up to `Backoff.cap_s`, logged once when it starts failing
and once when it recovers, never per attempt), a message that keeps failing
past `Backoff.max_age_s` (marked dead, logged), and a lost connection
(`ConnectionLost` leaves the message pending and ends the loop so the
caller reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drivers.reading import now_ns
from gateway.delivery.queue import Delivery, DeliveryQueue

log = logging.getLogger("gateway.delivery")


class DeliveryError(Exception):
    """The target refused or did not confirm a message; `target` names it."""

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.reason = message


class ConnectionLost(DeliveryError):
    """The transport is gone; the caller must reconnect (the message stays pending)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter; messages give up after `max_age_s`."""

    base_s: float = 1.0
    cap_s: float = 300.0
    max_age_s: float = 7 * 86_400.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry number `attempt` (1 = first retry): uniform in [cap/2, cap]."""
        ceiling = min(self.cap_s, self.base_s * float(1 << min(max(attempt - 1, 0), 32)))
        # Half fixed, half random: spreads retries without ever retrying at once.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


Send = Callable[[Delivery], Awaitable[None]]


async def drain(
    target: str,
    queue: DeliveryQueue,
    send: Send,
    *,
    wake: asyncio.Event,
    backoff: Backoff,
    rng: random.Random,
    clock: Callable[[], int] = now_ns,
) -> None:
    """Deliver `target`'s messages forever (until cancelled or `ConnectionLost`)."""
    failing_since: int | None = None
    while True:
        head = await asyncio.to_thread(queue.head, target)
        now = clock()
        if head is None:
            wake.clear()
            head = await asyncio.to_thread(queue.head, target)  # raced with a put?
            if head is None:
                await wake.wait()
                continue
        if head.next_attempt_ns > now:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), (head.next_attempt_ns - now) / 1e9)
            continue
        try:
            await send(head)
        except ConnectionLost:
            raise
        except DeliveryError as exc:
            attempt = head.attempts + 1
            if failing_since is None:
                failing_since = now
                log.warning(
                    "alert delivery to %s failing: %s (will retry with backoff)",
                    target,
                    exc.reason,
                    extra={"target": target},
                )
            if (now - head.created_ns) / 1e9 > backoff.max_age_s:
                await asyncio.to_thread(queue.dead, head.id, error=exc.reason)
                log.error(
                    "alert message %s to %s given up after %d attempts: %s",
                    head.uid,
                    target,
                    attempt,
                    exc.reason,
                    extra={"target": target},
                )
                continue
            delay_ns = int(backoff.delay_s(attempt, rng) * 1e9)
            await asyncio.to_thread(
                queue.retry, head.id, next_attempt_ns=now + delay_ns, error=exc.reason
            )
            continue
        await asyncio.to_thread(queue.done, head.id)
        if failing_since is not None:
            log.info(
                "alert delivery to %s recovered after %.1f s",
                target,
                (clock() - failing_since) / 1e9,
                extra={"target": target},
            )
            failing_since = None
