"""The `Finding` record: what a detector concluded, with the numbers behind it.

A finding is a statement a person (and a court) can follow: which detector,
which devices, the score against the threshold, an estimate with its
confidence interval where one applies, the time window the evidence covers,
and a one-line explanation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_NO_DETAILS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's conclusion about one device (or a balance group).

    `devices` lists the device ids the finding is about, the suspect first.
    `score` and `threshold` are in the detector's own unit (stated in
    `explanation`); the finding exists because score crossed threshold.
    `estimate`, `ci_low`, `ci_high` are the estimated quantity (for example a
    nozzle's relative error in %) and its 95 % confidence interval, if any.
    `window_start_ns`/`window_end_ns` bound the readings that are evidence.
    """

    detector: str
    devices: tuple[str, ...]
    score: float
    threshold: float
    window_start_ns: int
    window_end_ns: int
    explanation: str
    severity: Severity = Severity.WARNING
    group: str | None = None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str | None = None
    details: Mapping[str, float] = field(default_factory=lambda: _NO_DETAILS)

    @property
    def device(self) -> str:
        """The suspect device: the first of `devices`."""
        return self.devices[0]
