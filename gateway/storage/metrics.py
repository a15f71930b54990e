"""Storage metrics as a prometheus-client collector, and the health verdict.

The collector reads the in-memory stats of the outbox and forwarder at scrape
time (no I/O), so the API can register it on its registry and expose it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

HEALTH_OK = "ok"
HEALTH_DEGRADED = "degraded"
HEALTH_FAILING = "failing"

OUTBOX_DEGRADED_FILL = 0.8
OUTBOX_FAILING_FILL = 0.95
BACKLOG_FAILING_AGE_S = 300.0


def health_status(metrics: dict[str, Any]) -> str:
    """``ok``, ``degraded`` (store failing, outbox filling) or ``failing`` (data at risk)."""
    fill = metrics["outbox_bytes"] / max(1, metrics["outbox_max_bytes"])
    failing = metrics["consecutive_failures"] > 0
    if fill >= OUTBOX_FAILING_FILL or (
        failing and metrics["outbox_oldest_age_s"] >= BACKLOG_FAILING_AGE_S
    ):
        return HEALTH_FAILING
    # Refusals since this process started (the persisted quarantine count would keep the
    # status degraded forever after one refusal).
    if failing or fill >= OUTBOX_DEGRADED_FILL or metrics["rejected_entries"] > 0:
        return HEALTH_DEGRADED
    return HEALTH_OK


_GAUGES = (
    ("meterwatch_outbox_entries", "outbox_entries", "Batches waiting in the outbox."),
    ("meterwatch_outbox_points", "outbox_points", "Points waiting in the outbox."),
    ("meterwatch_outbox_bytes", "outbox_bytes", "Bytes counted against the outbox bound."),
    ("meterwatch_outbox_max_bytes", "outbox_max_bytes", "The outbox bound in bytes."),
    (
        "meterwatch_outbox_oldest_age_seconds",
        "outbox_oldest_age_s",
        "Age of the oldest waiting batch.",
    ),
    (
        "meterwatch_storage_write_rate_points_per_second",
        "write_rate_pps",
        "Points acknowledged by the store per second (last minute).",
    ),
    (
        "meterwatch_storage_consecutive_failures",
        "consecutive_failures",
        "Failed sends since the last success.",
    ),
)
_COUNTERS = (
    ("meterwatch_outbox_appended_points", "appended_points", "Points durably taken."),
    (
        "meterwatch_outbox_dropped_points",
        "dropped_points",
        "Raw readings dropped because the outbox was full.",
    ),
    ("meterwatch_outbox_dropped_entries", "dropped_entries", "Batches dropped when full."),
    ("meterwatch_outbox_invalid_points", "invalid_points", "Readings that could not be encoded."),
    (
        "meterwatch_outbox_quarantined_points",
        "quarantined_points",
        "Points the store refused for good (kept in quarantine).",
    ),
    ("meterwatch_storage_written_points", "written_points", "Points acknowledged by the store."),
    ("meterwatch_storage_write_errors", "write_errors", "Failed or refused sends."),
    (
        "meterwatch_storage_rejected_entries",
        "rejected_entries",
        "Outbox entries the store refused since start (quarantined).",
    ),
)


class StorageCollector(Collector):
    """Exposes `metrics()` (a zero-argument callable returning the storage metrics dict)."""

    def __init__(self, metrics: Callable[[], dict[str, Any]], *, site: str, backend: str) -> None:
        self._metrics = metrics
        self._labels = [site, backend]

    def collect(self) -> Iterator[Metric]:
        m = self._metrics()
        for name, key, doc in _GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["site", "backend"])
            g.add_metric(self._labels, float(m[key]))
            yield g
        for name, key, doc in _COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["site", "backend"])
            c.add_metric(self._labels, float(m[key]))
            yield c
        up = GaugeMetricFamily(
            "meterwatch_storage_healthy", "1 when storage health is ok.", labels=["site", "backend"]
        )
        up.add_metric(self._labels, 1.0 if health_status(m) == HEALTH_OK else 0.0)
        yield up
