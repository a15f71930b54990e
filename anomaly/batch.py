"""The `Batch`: readings of many devices in columns, the engine's only input.

A batch holds `n` readings: the device index (`Engine.index(device_id)`),
the timestamp in UTC nanoseconds, whether the reading's quality is ok, and
one float64 column per canonical field (NaN where a reading lacks the
field). Readings may come in any order and any mix of devices; the engine
sorts them by device and time.

Failure modes handled: columns of unequal length, wrong dtypes that cannot be
cast safely and device indices out of range all raise `BatchError`, naming
the column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Int32Array = npt.NDArray[np.int32]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


class BatchError(ValueError):
    """A batch is malformed; the message names the column."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Columns of `n` readings. Build directly or with `Batch.from_records`."""

    device_idx: Int32Array
    ts_ns: Int64Array
    ok: BoolArray
    fields: Mapping[str, FloatArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.device_idx)
        lengths = {"ts_ns": len(self.ts_ns), "ok": len(self.ok)}
        lengths.update({f"field {k!r}": len(v) for k, v in self.fields.items()})
        for name, length in lengths.items():
            if length != n:
                raise BatchError(f"batch column {name} has {length} rows, device_idx has {n}")

    def __len__(self) -> int:
        return len(self.device_idx)

    @classmethod
    def from_records(cls, records: Iterable[tuple[int, int, bool, Mapping[str, float]]]) -> Batch:
        """Build a batch from `(device_idx, ts_ns, ok, fields)` tuples."""
        rows = list(records)
        names = sorted({k for r in rows for k in r[3]})
        cols = {k: np.full(len(rows), np.nan) for k in names}
        for i, (_, _, _, values) in enumerate(rows):
            for k, v in values.items():
                cols[k][i] = v
        return cls(
            device_idx=np.fromiter((r[0] for r in rows), np.int32, len(rows)),
            ts_ns=np.fromiter((r[1] for r in rows), np.int64, len(rows)),
            ok=np.fromiter((bool(r[2]) for r in rows), np.bool_, len(rows)),
            fields=cols,
        )

    @classmethod
    def concat(cls, batches: Iterable[Batch]) -> Batch:
        """One batch holding the rows of all `batches` (fields missing in one are NaN)."""
        parts = list(batches)
        names = sorted({k for b in parts for k in b.fields})
        fields = {
            k: np.concatenate([np.asarray(b.fields.get(k, np.full(len(b), np.nan))) for b in parts])
            if parts
            else np.empty(0)
            for k in names
        }
        if not parts:
            return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.bool_), fields)
        return cls(
            device_idx=np.concatenate([b.device_idx for b in parts]).astype(np.int32),
            ts_ns=np.concatenate([b.ts_ns for b in parts]).astype(np.int64),
            ok=np.concatenate([b.ok for b in parts]).astype(np.bool_),
            fields=fields,
        )

    def checked(self, n_devices: int) -> Batch:
        """This batch with canonical dtypes; raises BatchError on bad indices or types."""
        try:
            dev = np.asarray(self.device_idx).astype(np.int32, casting="same_kind")
            ts = np.asarray(self.ts_ns).astype(np.int64, casting="same_kind")
            ok = np.asarray(self.ok).astype(np.bool_)
        except TypeError as exc:
            raise BatchError(f"batch index columns have the wrong type: {exc}") from None
        if len(dev) and (int(dev.min()) < 0 or int(dev.max()) >= n_devices):
            bad = int(dev[(dev < 0) | (dev >= n_devices)][0])
            raise BatchError(f"batch column device_idx holds {bad}, engine has {n_devices} devices")
        fields: dict[str, FloatArray] = {}
        for name, col in self.fields.items():
            try:
                fields[name] = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise BatchError(f"batch field {name!r} is not numeric: {exc}") from None
        return Batch(dev, ts, ok, fields)
