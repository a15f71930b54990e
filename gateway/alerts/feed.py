"""An in-process fan-out of alert changes to asyncio subscribers.

Each subscriber has its own bounded queue on its own event loop. Publishing
never blocks and may happen from any thread (the store's writers run in
worker threads): a change is handed to each subscriber's loop with
``call_soon_threadsafe``. A subscriber that falls `max_queue` changes behind
is cut off: its iterator ends and `lagged` is set, so an SSE client
reconnects and re-reads the current state rather than silently missing
changes; ingest is never slowed down by a slow reader.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from types import TracebackType

from gateway.alerts.model import AlertChange

log = logging.getLogger(__name__)


class Subscription:
    """An async iterator of `AlertChange`; registered as soon as it is created.

    Use ``async with store.subscribe() as sub: async for change in sub: ...``
    or call `close()` when done; an abandoned subscription is dropped when it
    is garbage-collected.
    """

    def __init__(self, feed: ChangeFeed, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self._feed = feed
        self._loop = loop
        self._queue: asyncio.Queue[AlertChange | None] = asyncio.Queue(max_queue + 1)
        self._max = max_queue
        self.closed = False
        self.lagged = False

    def _offer(self, change: AlertChange) -> None:
        """Runs on the subscriber's loop."""
        if self.closed:
            return
        if self._queue.qsize() >= self._max:
            self.lagged = True
            log.warning("alert feed subscriber fell %d changes behind; cut off", self._max)
            self.close()
            return
        self._queue.put_nowait(change)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._feed._remove(self)
        # The extra slot reserved in the queue guarantees room for the sentinel.
        self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> AlertChange:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay ended for further calls
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChangeFeed:
    """Fan-out of changes to every live `Subscription` (thread-safe `publish`)."""

    def __init__(self, *, max_queue: int = 256) -> None:
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.max_queue = max_queue

    def subscribe(self, *, max_queue: int | None = None) -> Subscription:
        """A new subscription on the running loop (call it from a coroutine)."""
        sub = Subscription(self, asyncio.get_running_loop(), max_queue or self.max_queue)
        with self._lock:
            self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, change: AlertChange) -> None:
        with self._lock:
            subs = list(self._subs)
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for sub in subs:
            if sub._loop is current:
                sub._offer(change)
            else:
                try:
                    sub._loop.call_soon_threadsafe(sub._offer, change)
                except RuntimeError:  # its loop is closed: the subscriber is gone
                    self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
