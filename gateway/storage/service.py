"""`open_storage`: the outbox, the forwarder and the configured store, as one `Storage`.

The pipeline appends to ``storage.outbox`` (a batch counts as taken when the
append returns); ``storage.run()`` forwards it to ``storage.store``, which the
API queries. With the embedded backend the same path is used (outbox ->
SQLite store), so switching backends changes nothing upstream.

Failure modes handled: an unreachable InfluxDB at start is not fatal (the
database is created on the first write that finds it missing; the outbox
holds readings meanwhile); `close` drains what it can within a deadline and
leaves the rest in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.reading import Reading
from gateway.config import StorageBackend, StorageSettings
from gateway.storage.embedded import EmbeddedStore
from gateway.storage.forwarder import Forwarder
from gateway.storage.influx_v1 import InfluxV1Store
from gateway.storage.influx_v2 import InfluxV2Store
from gateway.storage.metrics import StorageCollector, health_status
from gateway.storage.outbox import AppendResult, Outbox
from gateway.storage.query import ReadingStore
from gateway.storage.schema import ReadingEncoder

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite"
EMBEDDED_FILE = "readings.sqlite"
MAINTENANCE_INTERVAL_S = 600.0
MIB = 1024 * 1024


class Storage:
    """The storage side of the gateway: `outbox`, `store`, `forwarder`."""

    def __init__(
        self,
        *,
        site_id: str,
        backend: StorageBackend,
        outbox: Outbox,
        store: ReadingStore,
        forwarder: Forwarder,
        maintenance_interval_s: float = MAINTENANCE_INTERVAL_S,
    ) -> None:
        self.site_id = site_id
        self.backend = backend
        self.outbox = outbox
        self.store = store
        self.forwarder = forwarder
        self.maintenance_interval_s = maintenance_interval_s

    async def append(self, readings: Sequence[Reading]) -> AppendResult:
        """Durably take a batch of readings (shorthand for ``outbox.append_readings``)."""
        return await self.outbox.append_readings(readings)

    async def persist(self, readings: Sequence[Reading]) -> None:
        """The pipeline's ``persist`` callback: durably take a batch (raises if it cannot)."""
        await self.outbox.append_readings(readings)

    async def run(self) -> None:
        """Forward the outbox (and maintain the embedded store) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.forwarder.run(), name="storage-forwarder")
            if isinstance(self.store, EmbeddedStore):
                tg.create_task(self._maintain(self.store), name="storage-maintenance")

    async def _maintain(self, store: EmbeddedStore) -> None:
        while True:
            try:
                deleted = await store.maintain()
                if any(deleted.values()):
                    log.info("embedded store retention applied", extra=deleted)
            except Exception:
                log.exception("embedded store maintenance failed; will retry")
            await asyncio.sleep(self.maintenance_interval_s)

    def metrics(self) -> dict[str, Any]:
        """Outbox depth and age, write rate, errors, drops (from memory; no I/O)."""
        o = self.outbox.stats()
        f = self.forwarder.stats()
        return {
            "backend": self.backend.value,
            "outbox_entries": o.entries,
            "outbox_points": o.points,
            "outbox_bytes": o.bytes,
            "outbox_max_bytes": o.max_bytes,
            "outbox_oldest_age_s": round(o.oldest_age_s(), 3),
            "appended_points": o.appended_points,
            "dropped_points": o.dropped_points,
            "dropped_entries": o.dropped_entries,
            "invalid_points": o.invalid_points,
            "quarantined_points": o.quarantined_points,
            "quarantined_entries": o.quarantined_entries,
            "written_points": f.sent_points,
            "write_batches": f.sent_batches,
            "write_errors": f.errors,
            "rejected_entries": f.rejected_entries,
            "write_rate_pps": round(f.write_rate_pps, 3),
            "consecutive_failures": f.consecutive_failures,
            "forwarder_state": f.state.value,
            "last_error": f.last_error,
            "last_success_ns": f.last_success_ns,
        }

    def health(self) -> dict[str, Any]:
        """``{"status": ok|degraded|failing, ...metrics}`` for the /health route."""
        m = self.metrics()
        return {"status": health_status(m), **m}

    def collector(self) -> StorageCollector:
        """A prometheus-client collector; register it on the API's registry."""
        return StorageCollector(self.metrics, site=self.site_id, backend=self.backend.value)

    async def close(self, *, drain_timeout_s: float = 5.0) -> None:
        """Forward what can be forwarded within `drain_timeout_s`, then close everything.

        Call after cancelling `run`. What is not forwarded stays in the outbox.
        """
        with contextlib.suppress(Exception):
            drained = await self.forwarder.drain(timeout_s=drain_timeout_s)
            if not drained:
                log.warning(
                    "storage closed with readings still in the outbox (sent on next start)",
                    extra={"points": self.outbox.stats().points},
                )
        await self.outbox.close()
        await self.store.close()


async def open_store(settings: StorageSettings, *, encoder: ReadingEncoder) -> ReadingStore:
    """The configured `ReadingStore` alone (for tools that only query)."""
    influx = settings.influxdb
    if settings.backend is StorageBackend.EMBEDDED:
        return await EmbeddedStore.open(
            Path(settings.data_dir) / EMBEDDED_FILE,
            raw_retention_days=settings.raw_retention_days,
            retention_days=settings.retention_days,
        )
    if settings.backend is StorageBackend.INFLUXDB_V1:
        store = InfluxV1Store(
            url=influx.url,
            database=influx.database,
            encoder=encoder,
            retention_policy=influx.retention_policy,
            username=influx.username,
            password=influx.password.get_secret_value() if influx.password else None,
            token=influx.token.get_secret_value() if influx.token else None,
            timeout_s=influx.timeout_s,
            gzip_body=influx.gzip,
            verify_tls=influx.verify_tls,
            create_database=influx.create_database,
        )
        if influx.create_database:
            await store.ensure_database()
        return store
    if influx.token is None or not influx.org or not influx.bucket:
        raise ValueError("storage.influxdb: backend influxdb_v2 needs token, org and bucket")
    return InfluxV2Store(
        url=influx.url,
        token=influx.token.get_secret_value(),
        org=influx.org,
        bucket=influx.bucket,
        encoder=encoder,
        timeout_s=influx.timeout_s,
        gzip_body=influx.gzip,
        verify_tls=influx.verify_tls,
    )


async def open_storage(
    settings: StorageSettings,
    *,
    site_id: str,
    device_profiles: Mapping[str, str] | None = None,
) -> Storage:
    """Open the outbox (``<data_dir>/outbox.sqlite``), the store and the forwarder.

    `device_profiles` maps device id to profile name for the ``profile`` tag.
    The outbox bound is ``outbox_max_mb`` MiB.
    """
    encoder = ReadingEncoder(site_id=site_id, profiles=device_profiles)
    data_dir = Path(settings.data_dir)
    outbox = await Outbox.open(
        data_dir / OUTBOX_FILE, max_bytes=int(settings.outbox_max_mb * MIB), encoder=encoder
    )
    try:
        store = await open_store(settings, encoder=encoder)
    except BaseException:
        await outbox.close()
        raise
    forwarder = Forwarder(
        outbox,
        store,
        batch_points=settings.influxdb.batch_size,
        idle_wait_s=settings.influxdb.flush_interval_s,
    )
    return Storage(
        site_id=site_id,
        backend=settings.backend,
        outbox=outbox,
        store=store,
        forwarder=forwarder,
    )
