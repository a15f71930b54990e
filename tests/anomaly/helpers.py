"""Tiny builders for hand-made batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from anomaly.batch import Batch
from anomaly.engine import DeviceModel, Engine

NS = 1_000_000_000
T0 = 1_772_409_600 * NS


def rows(
    engine: Engine,
    device: str,
    ts_s: Sequence[float],
    fields: Mapping[str, Sequence[float]],
    ok: Sequence[bool] | None = None,
) -> Batch:
    """A batch of one device: `fields[name][i]` at `T0 + ts_s[i]` seconds."""
    n = len(ts_s)
    return Batch(
        device_idx=np.full(n, engine.index(device), np.int32),
        ts_ns=(T0 + np.asarray(ts_s, dtype=float) * NS).astype(np.int64),
        ok=np.ones(n, bool) if ok is None else np.asarray(ok, bool),
        fields={k: np.asarray(v, dtype=float) for k, v in fields.items()},
    )


def detectors(findings) -> list[str]:
    return [f.detector for f in findings]


def one(kind: str, mpe: float = 1.0, *, device: str = "d1", **kw: object) -> Engine:
    return Engine([DeviceModel(device, kind, mpe, **kw)])  # type: ignore[arg-type]
