"""Storage: the durable outbox, the forwarder, and the reading stores.

    storage = await open_storage(settings.storage, site_id=settings.site.id,
                                 device_profiles={d.id: d.profile for d in settings.devices})
    await storage.persist(batch)                     # durable: now it is taken
    tg.create_task(storage.run(), name="storage")    # forwards to the store
    result = await storage.store.query("n1", start_ns=a, end_ns=b, every_s=60, agg="mean")
    storage.health(); registry.register(storage.collector())
    await storage.close(drain_timeout_s=5)           # after cancelling run()

Modules: `lineprotocol` (pure encode/parse), `schema` (measurement, tags,
fields, timestamps), `query` (the `ReadingStore` protocol, `QueryResult`,
InfluxQL text), `influx_v1`, `influx_v2`, `embedded` (the stores), `outbox`,
`forwarder`, `metrics`, `service` (`open_storage`, `Storage`), `errors`.
"""

from gateway.storage.embedded import EmbeddedStore
from gateway.storage.errors import (
    LineProtocolError,
    QueryError,
    SinkRejected,
    SinkUnavailable,
    StorageError,
)
from gateway.storage.forwarder import Backoff, Forwarder, ForwarderState, ForwarderStats
from gateway.storage.influx_v1 import InfluxV1Store
from gateway.storage.influx_v2 import InfluxV2Store
from gateway.storage.outbox import AppendResult, EntryKind, Outbox, OutboxEntry, OutboxStats
from gateway.storage.query import Agg, QueryResult, ReadingStore
from gateway.storage.schema import ReadingEncoder, point_ts_ns
from gateway.storage.service import Storage, open_storage, open_store

__all__ = [
    "Agg",
    "AppendResult",
    "Backoff",
    "EmbeddedStore",
    "EntryKind",
    "Forwarder",
    "ForwarderState",
    "ForwarderStats",
    "InfluxV1Store",
    "InfluxV2Store",
    "LineProtocolError",
    "Outbox",
    "OutboxEntry",
    "OutboxStats",
    "QueryError",
    "QueryResult",
    "ReadingEncoder",
    "ReadingStore",
    "SinkRejected",
    "SinkUnavailable",
    "Storage",
    "StorageError",
    "open_storage",
    "open_store",
    "point_ts_ns",
]
