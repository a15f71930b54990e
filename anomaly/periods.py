"""Period snapshots: each device's registers interpolated at period boundaries.

Balance groups compare devices polled at different instants. Every counter
(and the tank stock) is therefore interpolated linearly at the period
boundaries (multiples of `period_s`, one hour by default) between the two
readings around each boundary, and kept in a small ring per device. A period
of a device is the difference of two consecutive boundary snapshots; a
period of a group uses the same boundaries for all its members.

Power is integrated into a pseudo-counter (`~power_kwh`, trapezoid between
consecutive readings) with its covered seconds (`~power_s`), so "register vs
integrated power" is one more period difference.

Failure modes handled: a boundary crossed inside a long gap (longer than
`max_interp_s`) is kept but marked, and periods touching it are not used; a
device lagging more than the ring holds loses only the oldest snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anomaly._common import HOUR_NS, KIND_CODE, NS, Context
from anomaly._frame import Frame
from anomaly.batch import BoolArray, FloatArray, Int64Array

N_SLOTS = 4
RING = 36

# per kind, the quantity in each snapshot slot ("~..." = computed here)
SLOTS: Mapping[str, tuple[str | None, ...]] = {
    "electricity": ("energy_import_kwh", "energy_export_kwh", "~power_kwh", "~power_s"),
    "water": ("volume_forward_m3", "volume_reverse_m3", None, None),
    "gas": ("volume_unconverted_m3", "volume_converted_m3", None, None),
    "dispenser_nozzle": ("totalizer_volume_l", "totalizer_amount", "transaction_counter", None),
    "tank_gauge": ("net_volume_l", "deliveries_net_l", "gross_volume_l", None),
}


@dataclass(frozen=True, slots=True)
class Periods:
    """Completed device periods: `delta[i]` is slot-wise change over period `b[i]-1 -> b[i]`."""

    dev: npt.NDArray[np.intp]
    b: Int64Array
    delta: FloatArray  # (m, N_SLOTS)
    valid: BoolArray  # (m,) both ends present and not across a long gap


class Snapshots:
    """Per-device rings of boundary snapshots."""

    def __init__(
        self, ctx: Context, *, period_s: float = 3600.0, max_interp_s: float = 3 * 3600.0
    ) -> None:
        self.ctx = ctx
        n = ctx.n
        self.period_ns = int(period_s * NS)
        self.max_interp_ns = int(max_interp_s * NS)
        self.snap_b = np.full((n, RING), -1, dtype=np.int64)
        self.snap_v = np.full((n, RING, N_SLOTS), np.nan)
        self.snap_gap = np.zeros((n, RING), dtype=bool)
        self.last_ts = np.zeros(n, dtype=np.int64)
        self.last_v = np.full((n, N_SLOTS), np.nan)
        self.pcum = np.zeros((n, 2))  # ~power_kwh, ~power_s
        self.latest_b = np.full(n, -1, dtype=np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "snap_b": self.snap_b,
            "snap_v": self.snap_v,
            "snap_gap": self.snap_gap,
            "last_ts": self.last_ts,
            "last_v": self.last_v,
            "pcum": self.pcum,
            "latest_b": self.latest_b,
        }

    def _values(self, frame: Frame, interval_s: FloatArray) -> FloatArray:
        vals = np.full((frame.n, N_SLOTS), np.nan)
        kinds = self.ctx.kind[frame.dev]
        for kind, slots in SLOTS.items():
            mask = kinds == KIND_CODE[kind]
            if not mask.any():
                continue
            for s, name in enumerate(slots):
                if name is None or name.startswith("~"):
                    continue
                col = frame.cont.get(name, frame.fields.get(name))
                if col is not None:
                    np.copyto(vals[:, s], col, where=mask)
        if "power_total_w" in frame.fields:
            self._power(frame, vals, interval_s)
        vals[~frame.ok] = np.nan
        return vals

    def _power(self, frame: Frame, vals: FloatArray, interval_s: FloatArray) -> None:
        p = frame.fields["power_total_w"]
        valid = frame.valid("power_total_w")
        pi = frame.prev_idx(valid)
        j = np.maximum(pi, 0)
        dt_ns = frame.ts - frame.ts[j]
        lim = np.maximum(np.nan_to_num(interval_s[frame.dev] * 3 * NS, nan=1800 * NS), 60 * NS)
        use = valid & (pi >= 0) & (dt_ns <= lim)
        kwh = np.where(use, (p + p[j]) / 2 * dt_ns / HOUR_NS / 1000.0, 0.0)
        secs = np.where(use, dt_ns / NS, 0.0)
        # the first valid row of a device continues from the last batch's value
        first = valid & (pi < 0)
        lp = self.ctx.last.get("power_total_w")
        if lp is not None:
            dt0 = frame.ts - self.last_ts[frame.dev]
            ok0 = first & ~np.isnan(lp[frame.dev]) & (self.last_ts[frame.dev] > 0) & (dt0 <= lim)
            kwh = np.where(ok0, (p + lp[frame.dev]) / 2 * dt0 / HOUR_NS / 1000.0, kwh)
            secs = np.where(ok0, dt0 / NS, secs)
        cum_k = self.pcum[frame.dev, 0] + frame.seg_cumsum(kwh)
        cum_s = self.pcum[frame.dev, 1] + frame.seg_cumsum(secs)
        elec = self.ctx.kind[frame.dev] == KIND_CODE["electricity"]
        np.copyto(vals[:, 2], cum_k, where=elec)
        np.copyto(vals[:, 3], cum_s, where=elec)
        if frame.n:
            self.pcum[frame.seg_dev, 0] = cum_k[frame.last]
            self.pcum[frame.seg_dev, 1] = cum_s[frame.last]

    def process(self, frame: Frame, interval_s: FloatArray) -> Periods:
        """Interpolate boundary snapshots from the batch; return completed device periods."""
        if not frame.n:
            return _empty()
        vals = self._values(frame, interval_s)
        anchor = frame.ok & np.any(~np.isnan(vals), axis=1)
        pi = frame.prev_idx(anchor)
        j = np.maximum(pi, 0)
        t0 = np.where(pi >= 0, frame.ts[j], self.last_ts[frame.dev])
        v0 = np.where((pi >= 0)[:, None], vals[j], self.last_v[frame.dev])
        P = self.period_ns
        have = anchor & (t0 > 0)
        b_hi = frame.ts // P
        b_lo = np.maximum(t0 // P + 1, b_hi - RING + 1)
        count = np.where(have, np.maximum(b_hi - b_lo + 1, 0), 0)
        # boundary exactly at t0 was written when t0 was processed
        rows = np.repeat(np.arange(frame.n), count)
        if len(rows):
            offs = np.arange(len(rows)) - np.repeat(np.cumsum(count) - count, count)
            b = b_lo[rows] + offs
            tb = b * P
            span = (frame.ts[rows] - t0[rows]).astype(np.float64)
            w = np.where(span > 0, (tb - t0[rows]) / np.where(span > 0, span, 1), 1.0)
            vb = v0[rows] + (vals[rows] - v0[rows]) * w[:, None]
            gap = span > self.max_interp_ns
            dev = frame.dev[rows]
            pos = b % RING
            self.snap_b[dev, pos] = b
            self.snap_v[dev, pos] = vb
            self.snap_gap[dev, pos] = gap
            np.maximum.at(self.latest_b, dev, b)
        # remember the last anchor per device
        last = frame.seg_last_valid(anchor)
        got = last >= 0
        self.last_ts[frame.seg_dev[got]] = frame.ts[last[got]]
        self.last_v[frame.seg_dev[got]] = vals[last[got]]
        if not len(rows):
            return _empty()
        prev_pos = (b - 1) % RING
        ok = (self.snap_b[dev, prev_pos] == b - 1) & ~gap & ~self.snap_gap[dev, prev_pos]
        delta = vb - self.snap_v[dev, prev_pos]
        return Periods(dev=dev, b=b, delta=delta, valid=ok)

    def get(self, dev: npt.NDArray[np.intp], b: int) -> tuple[FloatArray, BoolArray]:
        """Snapshots of devices `dev` at boundary `b`: (values (k, N_SLOTS), present (k,))."""
        pos = b % RING
        present = (self.snap_b[dev, pos] == b) & ~self.snap_gap[dev, pos]
        return self.snap_v[dev, pos], present


def _empty() -> Periods:
    return Periods(
        np.empty(0, np.intp), np.empty(0, np.int64), np.empty((0, N_SLOTS)), np.empty(0, bool)
    )
