"""Evidence: the readings digest and the per-alert evidence bundle.

Public API::

    readings_digest(readings: Sequence[Reading]) -> str       # hex SHA-256, canonical form
    readings_csv(readings: Sequence[Reading]) -> str
    cited_readings(readings, *, devices, start_ns, end_ns) -> list[Reading]  # window inclusive
    build_bundle(alert: Alert, history: Sequence[HistoryEntry],
                 readings: Sequence[Reading], ledger: Ledger) -> bytes   # zip; sync, CPU-bound
    EvidenceError

`build_bundle` imports matplotlib lazily; `readings_digest` is cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.evidence.digest import cited_readings, readings_csv, readings_digest

if TYPE_CHECKING:
    from gateway.evidence.bundle import EvidenceError, build_bundle

__all__ = ["EvidenceError", "build_bundle", "cited_readings", "readings_csv", "readings_digest"]


def __getattr__(name: str) -> Any:
    if name in ("build_bundle", "EvidenceError"):
        from gateway.evidence import bundle

        return getattr(bundle, name)
    raise AttributeError(name)
