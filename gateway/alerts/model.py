"""The alert records: `Alert`, its history, the changes the feed carries, and errors.

These are plain frozen dataclasses with a `to_dict()` that gives the JSON
shape used everywhere outside Python (API, webhooks, MQTT, evidence bundles):
enums as their string values, times as integer nanoseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from anomaly.finding import Severity

SEVERITY_RANK: Mapping[Severity, int] = MappingProxyType(
    {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
)


class AlertStatus(StrEnum):
    """Where an alert is in its lifecycle. OPEN and ACKNOWLEDGED are *active*."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"

    @property
    def active(self) -> bool:
        return self in (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)


class AlertAction(StrEnum):
    """What a person can do to an alert (`AlertStore.act`)."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    DISMISS = "dismiss"
    NOTE = "note"


class ChangeKind(StrEnum):
    """What happened to an alert: one per history entry, ledger entry and feed item."""

    CREATED = "created"  # a finding raised a new alert
    UPDATED = "updated"  # a further finding was merged into an active alert
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"
    NOTED = "noted"


ACTION_CHANGE: Mapping[AlertAction, ChangeKind] = MappingProxyType(
    {
        AlertAction.ACKNOWLEDGE: ChangeKind.ACKNOWLEDGED,
        AlertAction.RESOLVE: ChangeKind.RESOLVED,
        AlertAction.DISMISS: ChangeKind.DISMISSED,
        AlertAction.NOTE: ChangeKind.NOTED,
    }
)

# Valid transitions: (status, action) -> new status. NOTE keeps the status.
TRANSITIONS: Mapping[tuple[AlertStatus, AlertAction], AlertStatus] = MappingProxyType(
    {
        (AlertStatus.OPEN, AlertAction.ACKNOWLEDGE): AlertStatus.ACKNOWLEDGED,
        (AlertStatus.OPEN, AlertAction.RESOLVE): AlertStatus.RESOLVED,
        (AlertStatus.OPEN, AlertAction.DISMISS): AlertStatus.DISMISSED,
        (AlertStatus.ACKNOWLEDGED, AlertAction.RESOLVE): AlertStatus.RESOLVED,
        (AlertStatus.ACKNOWLEDGED, AlertAction.DISMISS): AlertStatus.DISMISSED,
        **{(s, AlertAction.NOTE): s for s in AlertStatus},
    }
)

SYSTEM_ACTOR = "meterwatch"
"""The `who` of history entries the gateway itself writes (created, updated)."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One event in an alert's life. `ledger_index` is its entry in the evidence ledger.

    For CREATED and UPDATED entries `evidence_digest`, `score` and the window
    describe the finding merged at that moment; for actions they are None.
    """

    kind: ChangeKind
    ts_ns: int
    who: str
    note: str | None
    ledger_index: int
    evidence_digest: str | None = None
    score: float | None = None
    window_start_ns: int | None = None
    window_end_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "ts_ns": self.ts_ns,
            "who": self.who,
            "note": self.note,
            "ledger_index": self.ledger_index,
            "evidence_digest": self.evidence_digest,
            "score": self.score,
            "window_start_ns": self.window_start_ns,
            "window_end_ns": self.window_end_ns,
        }


_NO_DETAILS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Alert:
    """A finding with a lifecycle, deduplicated per (device, detector).

    The finding fields (score ... details, window, evidence_digest) are those of
    the latest finding merged; `count` is how many findings were merged;
    `severity` is the highest severity seen. `history` holds the lifecycle
    entries (created and every person's action) in order; the per-finding
    UPDATED entries are left out here to keep the record small
    (`AlertStore.history(id)` returns them all). `previous_id` links a
    recurrence to the resolved or dismissed alert it follows.
    """

    id: int
    site: str
    device: str
    detector: str
    group: str | None
    devices: tuple[str, ...]
    severity: Severity
    status: AlertStatus
    first_seen_ns: int
    last_seen_ns: int
    updated_ns: int
    count: int
    score: float
    threshold: float
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    unit: str | None
    explanation: str
    window_start_ns: int
    window_end_ns: int
    evidence_digest: str
    details: Mapping[str, float] = field(default_factory=lambda: _NO_DETAILS)
    previous_id: int | None = None
    history: tuple[HistoryEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site": self.site,
            "device": self.device,
            "detector": self.detector,
            "group": self.group,
            "devices": list(self.devices),
            "severity": self.severity.value,
            "status": self.status.value,
            "first_seen_ns": self.first_seen_ns,
            "last_seen_ns": self.last_seen_ns,
            "updated_ns": self.updated_ns,
            "count": self.count,
            "score": self.score,
            "threshold": self.threshold,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "unit": self.unit,
            "explanation": self.explanation,
            "window_start_ns": self.window_start_ns,
            "window_end_ns": self.window_end_ns,
            "evidence_digest": self.evidence_digest,
            "details": dict(self.details),
            "previous_id": self.previous_id,
            "history": [h.to_dict() for h in self.history],
        }


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One change of one alert, as the feed, webhooks and the MQTT topic carry it.

    `alert` is the alert's state right after the change; `ledger_index` is the
    ledger entry that records it.
    """

    kind: ChangeKind
    alert: Alert
    ts_ns: int
    who: str
    note: str | None
    ledger_index: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "ts_ns": self.ts_ns,
            "who": self.who,
            "note": self.note,
            "ledger_index": self.ledger_index,
            "alert": self.alert.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query: `items` newest first; `next_cursor` is None on the last page."""

    items: tuple[Alert, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SuppressedFinding:
    """A finding that fell in a maintenance window: recorded (and ledgered), not raised."""

    id: int
    site: str
    device: str
    detector: str
    ts_ns: int
    window_start_ns: int
    window_end_ns: int
    evidence_digest: str
    reason: str
    ledger_index: int


# --- errors ------------------------------------------------------------------------


class AlertError(Exception):
    """Base of the alert errors. `alert_id` names the alert when there is one."""

    def __init__(self, message: str, *, alert_id: int | None = None) -> None:
        super().__init__(message)
        self.alert_id = alert_id


class AlertNotFoundError(AlertError, LookupError):
    """No alert with this id (the API maps it to 404)."""

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"alert {alert_id} does not exist", alert_id=alert_id)


class InvalidTransitionError(AlertError, ValueError):
    """The action is not allowed in the alert's current status (the API maps it to 409)."""

    def __init__(self, alert_id: int, status: AlertStatus, action: AlertAction) -> None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is status)
        super().__init__(
            f"alert {alert_id} is {status.value}; cannot {action.value} it "
            f"(allowed: {', '.join(allowed)})",
            alert_id=alert_id,
        )
        self.status = status
        self.action = action


class InvalidQueryError(AlertError, ValueError):
    """A bad query argument: unknown cursor, limit out of range (the API maps it to 400/422)."""


class MaintenanceConfigError(AlertError, ValueError):
    """A maintenance window in the config is invalid; `path` is its config path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
