"""Maintenance windows: findings about a device under maintenance are recorded, not raised.

A window from the config (`alerts.maintenance[i]`) names a device (or ``*`` for
every device), a start and an end as ISO 8601 date-times
(``2026-11-28T08:00:00Z``; a time without an offset is read in the site's
time zone), and a reason. A finding is suppressed when its suspect device,
any of its devices or its balance group matches the window's device and the
end of its evidence window (the moment the detector concluded) lies in
``[start, end)``.

Failure modes handled: unparsable times, an end not after the start, an
unknown time zone; each raises `MaintenanceConfigError` naming the config path.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anomaly.finding import Finding
from gateway.alerts.model import MaintenanceConfigError
from gateway.config import MaintenanceWindow


@dataclass(frozen=True, slots=True)
class Window:
    """A parsed maintenance window, bounds in UTC nanoseconds (end exclusive)."""

    device: str
    start_ns: int
    end_ns: int
    reason: str = ""

    def covers(self, finding: Finding) -> bool:
        if (
            self.device != "*"
            and self.device not in finding.devices
            and (self.device != finding.group)
        ):
            return False
        return self.start_ns <= finding.window_end_ns < self.end_ns


def _to_ns(text: str, tz: ZoneInfo, path: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MaintenanceConfigError(
            path, f"{text!r} is not an ISO 8601 date-time (like 2026-11-28T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    # Integer arithmetic: no float rounding of nanoseconds.
    delta = moment - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def parse_windows(
    windows: Iterable[MaintenanceWindow],
    *,
    timezone: str = "UTC",
    known: Collection[str] | None = None,
) -> list[Window]:
    """Parse `alerts.maintenance` from the config. Raises `MaintenanceConfigError`.

    `known` (device and group ids), if given, must contain every window's device.
    """
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise MaintenanceConfigError("site.timezone", f"unknown time zone {timezone!r}") from None
    out: list[Window] = []
    for i, w in enumerate(windows):
        path = f"alerts.maintenance[{i}]"
        if known is not None and w.device != "*" and w.device not in known:
            raise MaintenanceConfigError(f"{path}.device", f"no device or group named {w.device!r}")
        start = _to_ns(w.start, tz, f"{path}.start")
        end = _to_ns(w.end, tz, f"{path}.end")
        if end <= start:
            raise MaintenanceConfigError(f"{path}.end", "must be after start")
        out.append(Window(w.device, start, end, w.reason))
    return out


def covering(windows: Sequence[Window], finding: Finding) -> Window | None:
    """The first window that suppresses `finding`, or None."""
    for window in windows:
        if window.covers(finding):
            return window
    return None
