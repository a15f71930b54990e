"""Response and request bodies of the HTTP API (they define the OpenAPI schema)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.api.status import DeviceStatus


class Problem(BaseModel):
    """An error response: what went wrong, in one sentence."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid API key"},
    429: {"model": Problem, "description": "too many failed authentications from this address"},
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "the key's role may not do this"}
}
STORE_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "the readings store is away; retry (Retry-After)"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such object within the key's sites"}
}
BAD_REQUEST: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "description": "well-formed but unusable (reversed time range, unknown cursor)",
    }
}


class ReadingOut(BaseModel):
    ts_ns: int
    seq: int
    quality: str
    fields: dict[str, float]


class ReadingsOut(BaseModel):
    """A device's readings in columns: row i is ``ts_ns[i]`` with ``fields[name][i]``."""

    device_id: str
    start_ns: int
    end_ns: int
    every_s: float | None = Field(None, description="interval of a downsampled answer")
    agg: str | None = Field(None, description="aggregate of a downsampled answer")
    ts_ns: list[int] = Field(description="row times (interval starts when downsampled)")
    fields: dict[str, list[float | None]] = Field(description="values per field; null = missing")
    seq: list[int] = Field(default_factory=list, description="raw answers only")
    quality: list[str] = Field(default_factory=list, description="raw answers only")
    truncated: bool = Field(False, description="the row limit was reached")


class DeviceDetail(DeviceStatus):
    """A device's live status plus what the config says about it and its latest reading."""

    poll_interval_s: float | None = None
    accuracy_class: str | None = None
    mpe_pct: float | None = None
    latest: ReadingOut | None = None
    open_alerts: int = Field(0, description="alerts of this device not resolved or dismissed")
    open_alerts_truncated: bool = Field(False, description="open_alerts counted only the first 100")


class Health(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"


class HealthOut(BaseModel):
    status: Health
    reasons: list[str] = Field(description="why the gateway is degraded (empty when ok)")
    devices_total: int
    devices_up: int


class LedgerVerifyOut(BaseModel):
    """The result of recomputing the whole ledger from its entries."""

    ok: bool
    size: int = Field(description="number of entries")
    root: str = Field(description="Merkle tree root (hex) recomputed over the entries")
    first_bad: int | None = Field(None, description="index of the first bad entry, if any")
    problem: str | None = None
    heads_checked: int = Field(0, description="recorded (signed) tree heads checked")


Note = Annotated[str, Field(max_length=2000)]


class ActionIn(BaseModel):
    """An alert action's body: an optional note."""

    model_config = ConfigDict(extra="forbid")

    note: Note = ""


class NoteIn(BaseModel):
    """A note: some text that is not only whitespace."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]


class HistoryOut(BaseModel):
    """One event in an alert's life (its ledger entry is `ledger_index`)."""

    kind: str = Field(description="created, updated, acknowledged, resolved, dismissed, noted")
    ts_ns: int
    who: str
    note: str | None = None
    ledger_index: int
    evidence_digest: str | None = None
    score: float | None = None
    window_start_ns: int | None = None
    window_end_ns: int | None = None


class AlertOut(BaseModel):
    """An alert: the latest finding merged into it, and its lifecycle."""

    id: int
    site: str
    device: str
    detector: str
    group: str | None = None
    devices: list[str]
    severity: str = Field(description="info, warning or critical (highest seen)")
    status: str = Field(description="open, acknowledged, resolved or dismissed")
    first_seen_ns: int
    last_seen_ns: int
    updated_ns: int
    count: int = Field(description="findings merged into this alert")
    score: float
    threshold: float
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str | None = None
    explanation: str
    window_start_ns: int
    window_end_ns: int
    evidence_digest: str
    details: dict[str, float] = Field(default_factory=dict)
    previous_id: int | None = None
    history: list[HistoryOut] = Field(default_factory=list)


class AlertPage(BaseModel):
    """One page of alerts, newest first; pass `next_cursor` as `cursor` for the next."""

    items: list[AlertOut]
    next_cursor: str | None = None


class AlertChangeOut(BaseModel):
    """One alert change as sent on the event stream (event ``alert``)."""

    kind: str
    ts_ns: int
    who: str
    note: str | None = None
    ledger_index: int
    alert: AlertOut


class TimelineEvent(BaseModel):
    """Something that happened to one of the device's alerts."""

    ts_ns: int
    kind: str = Field(description="created, updated, acknowledged, resolved, dismissed, noted")
    alert_id: int
    detector: str
    who: str
    note: str | None = None
    ledger_index: int


class TimelineOut(BaseModel):
    device_id: str
    start_ns: int
    end_ns: int
    readings: ReadingsOut = Field(description="downsampled overview (at most ~200 intervals)")
    alerts: list[AlertOut]
    alerts_truncated: bool = False
    events: list[TimelineEvent] = Field(description="oldest first")


class WhoAmI(BaseModel):
    """The presented key: its name, role and sites, and the gateway's page size limit."""

    name: str
    role: str
    sites: list[str]
    max_page_size: int
