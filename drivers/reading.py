"""The `Reading` record: one poll (or one message) of one device.

Every driver produces readings; every consumer (pipeline, storage, anomaly
adapter, API) takes them. A failed poll still yields a reading, with an empty
`fields` mapping and a bad `quality`, so that an old value is never passed off
with a new timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class DeviceKind(StrEnum):
    """The closed set of device kinds meterwatch knows canonical fields for."""

    ELECTRICITY = "electricity"
    WATER = "water"
    GAS = "gas"
    DISPENSER_NOZZLE = "dispenser_nozzle"
    TANK_GAUGE = "tank_gauge"


class Quality(StrEnum):
    """Per-reading quality. Modbus exceptions use `exception_quality(code)`."""

    OK = "ok"
    TIMEOUT = "timeout"
    DECODE_ERROR = "decode_error"
    STALE = "stale"
    DISCONNECTED = "disconnected"


def exception_quality(code: int) -> str:
    """Quality string for a Modbus exception response, e.g. ``exception:2``."""
    return f"exception:{code}"


def is_ok(quality: str) -> bool:
    """True when a reading's values may be used."""
    return quality == Quality.OK


_EMPTY: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Reading:
    """One device's values at one instant.

    `ts_ns` is UTC nanoseconds since the epoch, taken when the response
    arrived (or the message was received). `seq` increases by one per poll of
    the device, failed polls included, so a gap in `seq` means a lost reading
    and (device_id, seq) identifies a reading for idempotent writes.
    """

    device_id: str
    kind: DeviceKind
    ts_ns: int
    seq: int
    fields: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    quality: str = Quality.OK

    @property
    def ok(self) -> bool:
        return is_ok(self.quality)


def now_ns() -> int:
    """Current wall-clock time in UTC nanoseconds."""
    return time.time_ns()
