"""Prometheus metrics of the API, exposed at ``/metrics``.

Everything lives in one `CollectorRegistry` (the runtime may pass its own so
pollers and storage export through the same endpoint). Labels are bounded
sets: the route template (never the raw path, so ids cannot blow up the
series count), method and status class; devices and alerts are counted by
state and severity, never labelled by id, so the endpoint carries no per-site
detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.api.status import DeviceState, StatusProvider


class _DeviceStateCollector(Collector):
    """Devices by state, read from the status provider at scrape time."""

    def __init__(self, status: StatusProvider) -> None:
        self._status = status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meterwatch_devices", "Configured devices by connection state", labels=["state"]
        )
        counts = dict.fromkeys(DeviceState, 0)
        for dev in self._status.devices():
            counts[dev.state] += 1
        for state, n in counts.items():
            family.add_metric([state.value], n)
        yield family


class _AlertCountCollector(Collector):
    """Alerts by status, counted by the alert store at scrape time."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meterwatch_alerts", "Alerts in the store by status", labels=["status"]
        )
        for status, n in sorted(self._count().items()):
            family.add_metric([status], n)
        yield family


class ApiMetrics:
    """The API's own counters plus scrape-time gauges for devices and alerts."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        status: StatusProvider,
        count_alerts: Callable[[], dict[str, int]],
    ) -> None:
        self.registry = registry
        self.requests = Counter(
            "meterwatch_api_requests",
            "HTTP requests handled by the API",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "meterwatch_api_request_duration_seconds",
            "Time to produce the response head",
            ["route"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "meterwatch_api_auth_failures",
            "Requests with a missing or unknown credential",
            registry=registry,
        )
        self.auth_throttled = Counter(
            "meterwatch_api_auth_throttled",
            "Requests refused with 429 after too many failed authentications",
            registry=registry,
        )
        self.sse_clients = Gauge(
            "meterwatch_api_sse_clients", "Open alert event streams", registry=registry
        )
        registry.register(_DeviceStateCollector(status))
        registry.register(_AlertCountCollector(count_alerts))
