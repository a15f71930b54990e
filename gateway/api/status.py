"""The live device status the API shows, and the protocol the runtime provides it by.

The runtime (pollers, MQTT clients) knows each device's state; the API only
reads it. `StatusProvider.devices()` is called on every devices request and by
`/health`, so it must be cheap and must not block (return a snapshot).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from drivers.reading import DeviceKind


class DeviceState(StrEnum):
    """A device's connection state as the poller sees it."""

    UNKNOWN = "unknown"  # configured, not polled (or heard from) yet
    UP = "up"
    DOWN = "down"
    BACKOFF = "backoff"


class DeviceStatus(BaseModel):
    """One device's live status: a snapshot taken by the runtime."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="device id from the config")
    kind: DeviceKind
    site: str = Field(description="site id the device belongs to (access is scoped by it)")
    profile: str = Field(description="device profile name")
    state: DeviceState
    last_ok_ns: int | None = Field(
        None, description="UTC ns of the last reading with quality ok; null if none yet"
    )
    last_quality: str | None = Field(
        None, description="quality of the last reading (ok, timeout, exception:<code>, ...)"
    )
    seq: int = Field(0, ge=0, description="sequence number of the last reading")
    errors: int = Field(0, ge=0, description="failed polls (or malformed payloads) so far")


@runtime_checkable
class StatusProvider(Protocol):
    """What the API needs from the runtime: a snapshot of every device's status."""

    def devices(self) -> list[DeviceStatus]:
        """Every configured, enabled device's current status. Cheap; never blocks."""
        ...
