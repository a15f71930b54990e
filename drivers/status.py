"""Live health of buses and devices, written by the drivers and read by the gateway.

The drivers own these objects and mutate them in place on the event loop;
readers (health endpoint, metrics) only read them on the same loop, so no
locking is needed. `as_dict()` gives a JSON-able snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class DeviceState(StrEnum):
    """UNKNOWN before the first poll; UP after a good one; DOWN after `down_after`
    consecutive failures while still polled every interval; BACKOFF while waiting
    a capped, jittered delay before the next probe."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    BACKOFF = "backoff"


@dataclass(slots=True)
class DeviceStatus:
    device_id: str
    state: DeviceState = DeviceState.UNKNOWN
    last_ok_ns: int | None = None
    last_poll_ns: int | None = None
    last_quality: str | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    polls: int = 0
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    messages: int = 0
    malformed: int = 0
    next_poll_ns: int | None = None
    last_start_lag_s: float | None = None  # how late the last poll started vs its schedule

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class BusStatus:
    """One bus (a Modbus endpoint or serial line, or an MQTT broker connection)."""

    bus: str = ""
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    last_error: str | None = None
    devices: dict[str, DeviceStatus] = field(default_factory=dict)

    def device(self, device_id: str) -> DeviceStatus:
        """The status of `device_id`, created on first use."""
        st = self.devices.get(device_id)
        if st is None:
            st = self.devices[device_id] = DeviceStatus(device_id)
        return st

    def as_dict(self) -> dict[str, Any]:
        return {
            "bus": self.bus,
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "last_error": self.last_error,
            "devices": {k: v.as_dict() for k, v in self.devices.items()},
        }
