"""A batch sorted by device and time, with per-device segment helpers.

Every detector works on the same sorted view: rows of one device are
contiguous and in time order, so "the previous reading of this device" is a
shift plus a forward fill, done for all devices at once. Values remembered
from earlier batches come in through `prev(...)`'s `state` argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from anomaly.batch import Batch, BoolArray, FloatArray, Int64Array

if TYPE_CHECKING:
    import numpy.typing as npt

    IntpArray = npt.NDArray[np.intp]


class Frame:
    """Rows of a batch sorted by (device, ts); segments are runs of one device."""

    def __init__(self, batch: Batch) -> None:
        ts = batch.ts_ns
        if len(ts) < 2 or bool(np.all(ts[1:] >= ts[:-1])):
            # already in time order (the usual case): a stable sort by device suffices
            order = np.argsort(batch.device_idx, kind="stable")
        else:
            order = np.lexsort((batch.ts_ns, batch.device_idx))
        self.n = len(order)
        self.dev: IntpArray = batch.device_idx[order].astype(np.intp)
        self.ts: Int64Array = batch.ts_ns[order]
        self.ok: BoolArray = batch.ok[order]
        self.fields: dict[str, FloatArray] = {k: v[order] for k, v in batch.fields.items()}
        n = self.n
        start = np.ones(n, dtype=bool)
        if n:
            start[1:] = self.dev[1:] != self.dev[:-1]
        self.first: IntpArray = np.flatnonzero(start)
        self.last: IntpArray = np.empty_like(self.first)
        if n:
            self.last[:-1] = self.first[1:] - 1
            self.last[-1] = n - 1
        self.seg_dev: IntpArray = self.dev[self.first]
        self.seg_id: IntpArray = np.cumsum(start) - 1
        self.seg_start_row: IntpArray = self.first[self.seg_id]
        self.rows: IntpArray = np.arange(n)
        self._cache: dict[str, tuple[FloatArray, BoolArray]] = {}
        self._valid: dict[str, BoolArray] = {}
        # counters unwrapped over rollovers and resets (filled by integrity)
        self.cont: dict[str, FloatArray] = {}

    # -- generic segment tools ----------------------------------------------------

    def last_idx(self, valid: BoolArray) -> IntpArray:
        """For each row, the row of the latest `valid` row at or before it in its segment, or -1."""
        if valid.all():
            return self.rows  # the common case: every row valid (do not modify the result)
        idx = np.where(valid, self.rows, -1)
        np.maximum.accumulate(idx, out=idx)
        idx[idx < self.seg_start_row] = -1
        return idx

    def prev_idx(self, valid: BoolArray) -> IntpArray:
        """For each row, the latest `valid` row strictly before it in its segment, or -1."""
        out = np.full(self.n, -1, dtype=np.intp)
        if not self.n:
            return out
        if valid.all():
            out[1:] = self.rows[:-1]
            out[self.first] = -1
            return out
        cur = self.last_idx(valid)
        out[1:] = cur[:-1]
        out[out < self.seg_start_row] = -1
        return out

    def seg_last_valid(self, valid: BoolArray) -> IntpArray:
        """Per segment, the last valid row, or -1."""
        if not self.n:
            return np.empty(0, np.intp)
        out: IntpArray = self.last_idx(valid)[self.last]
        return out

    def seg_sum(self, x: FloatArray | BoolArray) -> FloatArray:
        """Per segment, the sum of `x` (NaN counts as 0)."""
        out: FloatArray = np.bincount(  # type: ignore[assignment]
            self.seg_id, weights=np.nan_to_num(x.astype(np.float64)), minlength=len(self.first)
        )
        return out

    def seg_cumsum(self, x: FloatArray) -> FloatArray:
        """Per row, the running sum of `x` within its segment (inclusive)."""
        cs = np.cumsum(x)
        if not self.n:
            return cs
        before = cs[self.first] - x[self.first]
        return cs - before[self.seg_id]

    # -- field access -------------------------------------------------------------

    def valid(self, name: str) -> BoolArray:
        """Rows where field `name` is present in an ok reading (cached; do not modify)."""
        hit = self._valid.get(name)
        if hit is None:
            col = self.fields.get(name)
            hit = np.zeros(self.n, dtype=bool) if col is None else self.ok & ~np.isnan(col)
            self._valid[name] = hit
        return hit

    def prev(self, name: str, state: FloatArray) -> tuple[FloatArray, BoolArray]:
        """(previous valid value, whether it exists) for each row of field `name`.

        The previous value comes from this batch if the device has an earlier
        valid row, else from `state[device]` (NaN in state = never seen).
        """
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        col = self.fields[name]
        valid = self.valid(name)
        if valid.all() and self.n:
            out = np.empty(self.n)
            out[1:] = col[:-1]
            out[self.first] = state[self.seg_dev]
        else:
            p = self.prev_idx(valid)
            out = np.where(p >= 0, col[np.maximum(p, 0)], state[self.dev])
        res = (out, ~np.isnan(out))
        self._cache[name] = res
        return res

    def prev_ts(self, valid: BoolArray, state_ts: Int64Array) -> Int64Array:
        """Timestamp of the previous `valid` row (from `state_ts` at segment start; 0 = none)."""
        p = self.prev_idx(valid)
        return np.where(p >= 0, self.ts[np.maximum(p, 0)], state_ts[self.dev])

    def run_since(self, cond: BoolArray, reset: BoolArray, state_since: Int64Array) -> Int64Array:
        """Start time of the current run of `cond` per row (0 where not `cond`).

        A run is broken only by `reset` rows; rows that are neither keep it.
        A run that reaches back to the segment start continues from
        `state_since[device]` when that is non-zero (carried from an earlier
        batch). Update the state with `since[frame.last]` afterwards.
        """
        if not cond.any():
            return np.zeros(self.n, dtype=np.int64)
        r_idx = self.last_idx(reset)
        # the first cond row after the last reset: the start of the run
        first_cond = self.rows.copy()
        if self.n:
            # for each row, the first cond row after r_idx: use a reverse-min scan of cond rows
            nxt = np.where(cond, self.rows, self.n)
            nxt = np.minimum.accumulate(nxt[::-1])[::-1]
            after = np.where(r_idx >= 0, r_idx + 1, self.seg_start_row)
            first_cond = nxt[np.minimum(after, self.n - 1)]
        carried = (r_idx < 0) & (state_since[self.dev] > 0)
        start_ts = self.ts[np.minimum(first_cond, max(self.n - 1, 0))] if self.n else self.ts
        since = np.where(carried, state_since[self.dev], start_ts)
        return np.where(cond, since, 0).astype(np.int64)
