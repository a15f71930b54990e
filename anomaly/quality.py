"""Data-quality detectors: frozen values, gaps, device clock skew.

- `data_quality.gap`: no valid reading from a device for longer than
  `gap_factor` × its usual interval (at least `min_gap_s`). Raised while the
  silence lasts (judged against the newest timestamp in the batch, so a
  device that stops answering entirely is noticed) or when a gap is seen
  inside one batch.
- `data_quality.frozen_value`: an analog field (voltage, frequency,
  temperature, pressure, conversion factor) repeats exactly, non-zero, for
  longer than its `FROZEN_S` limit: a stuck sensor or a replayed register.
- `data_quality.implausible_value`: a gas corrector's temperature or
  absolute pressure outside what a distribution network can hold
  (`PLAUSIBLE_GAS`): a failed or manipulated sensor, with which the
  corrector converts the volume wrongly while staying self-consistent.
- `data_quality.clock_skew`: `device_clock_s` differs from the reading's
  timestamp by more than `clock_skew_s` (clears below half of it; reported
  again when the skew moves by another `clock_skew_s`).

Failure modes handled: readings with bad quality do not count as valid;
devices never seen do not raise gaps; the usual interval is learned per
device and not inflated by the gaps themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly._common import NS, Context, Latch, RateLimit, iso
from anomaly._frame import Frame
from anomaly.batch import FloatArray, Int64Array
from anomaly.finding import Finding, Severity

FROZEN_S: Mapping[str, float] = {
    "voltage_l1_v": 2 * 3600.0,
    "voltage_l2_v": 2 * 3600.0,
    "voltage_l3_v": 2 * 3600.0,
    "frequency_hz": 2 * 3600.0,
    "temperature_c": 24 * 3600.0,
    "pressure_bar": 24 * 3600.0,
    "conversion_factor": 24 * 3600.0,
}

# gas correctors: what a distribution network can hold (°C; bar absolute). A sensor
# offset inside these ranges needs a reference (a sister meter, the weather) to be seen.
PLAUSIBLE_GAS: Mapping[str, tuple[float, float]] = {
    "temperature_c": (-30.0, 50.0),
    "pressure_bar": (0.8, 100.0),
}


class DataQuality:
    """Gap, frozen-value and clock-skew checks for all devices at once."""

    def __init__(
        self,
        ctx: Context,
        *,
        gap_factor: float = 10.0,
        min_gap_s: float = 1800.0,
        clock_skew_s: float = 300.0,
    ) -> None:
        self.ctx = ctx
        n = ctx.n
        self.gap_factor = gap_factor
        self.min_gap_ns = int(min_gap_s * NS)
        self.clock_skew_s = clock_skew_s
        self.last_ok_ns = np.zeros(n, dtype=np.int64)
        self.dt_s = np.full(n, np.nan)
        self.gap = Latch(n)
        self.gap_rate = RateLimit(n, 0)
        self.frozen_since = {k: np.zeros(n, dtype=np.int64) for k in FROZEN_S}
        self.frozen = Latch(n)
        self.skew = Latch(n)
        self.implausible = Latch(n)

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"last_ok_ns": self.last_ok_ns, "dt_s": self.dt_s}
        out.update(self.gap.arrays("gap"))
        out["gap_rate"] = self.gap_rate.last_ns
        out.update({f"frozen_since.{k}": v for k, v in self.frozen_since.items()})
        out.update(self.frozen.arrays("frozen"))
        out.update(self.skew.arrays("skew"))
        out.update(self.implausible.arrays("implausible"))
        return out

    def _limit_ns(self, dev: np.ndarray) -> Int64Array:
        lim = np.nan_to_num(self.dt_s[dev] * self.gap_factor * NS, nan=0.0)
        out: Int64Array = np.maximum(lim, self.min_gap_ns).astype(np.int64)
        return out

    def process(self, frame: Frame) -> list[Finding]:
        out: list[Finding] = []
        if frame.n:
            self._gaps(frame, out)
            self._frozen(frame, out)
            self._skew(frame, out)
            self._plausible(frame, out)
        return out

    def _plausible(self, frame: Frame, out: list[Finding]) -> None:
        gas = self.ctx.is_kind(frame.dev, "gas")
        present = [k for k in PLAUSIBLE_GAS if k in frame.fields]
        if not present or not gas.any():
            return
        bad = np.zeros(frame.n, dtype=bool)
        fine = np.zeros(frame.n, dtype=bool)
        for k in present:
            lo, hi = PLAUSIBLE_GAS[k]
            v = frame.fields[k]
            valid = frame.valid(k) & gas
            bad |= valid & ((v < lo) | (v > hi))
            fine |= valid
        for r in self.implausible.update_rows(frame, bad, fine & ~bad):
            d = int(frame.dev[r])
            what = []
            for k in present:
                lo, hi = PLAUSIBLE_GAS[k]
                x = float(frame.fields[k][r])
                if x < lo or x > hi:
                    what.append(f"{k} {x:g} outside {lo:g}..{hi:g}")
            out.append(
                Finding(
                    detector="data_quality.implausible_value",
                    devices=(self.ctx.ids[d],),
                    score=1.0,
                    threshold=0.0,
                    window_start_ns=int(frame.ts[r]),
                    window_end_ns=int(frame.ts[r]),
                    explanation=f"{self.ctx.ids[d]}: {'; '.join(what)} (a failed or manipulated "
                    "sensor: the corrector converts the volume with it)",
                )
            )

    def _gaps(self, frame: Frame, out: list[Finding]) -> None:
        ids = self.ctx.ids
        ok = frame.ok
        prev = frame.prev_ts(ok, self.last_ok_ns)
        dt = np.where(ok & (prev > 0), frame.ts - prev, 0)
        lim = self._limit_ns(frame.dev)
        # gaps seen inside the batch that were not already reported as ongoing
        inside = np.flatnonzero((dt > lim) & ~self.gap.active[frame.dev])
        for r in self.gap_rate.first_per_device(frame, inside):
            d = int(frame.dev[r])
            out.append(
                Finding(
                    detector="data_quality.gap",
                    devices=(ids[d],),
                    score=float(dt[r] / NS),
                    threshold=float(lim[r] / NS),
                    window_start_ns=int(prev[r]),
                    window_end_ns=int(frame.ts[r]),
                    severity=Severity.INFO,
                    unit="s",
                    explanation=f"{ids[d]}: no valid reading for {dt[r] / NS / 60:.0f} min "
                    f"(from {iso(int(prev[r]))}), usual interval {self.dt_s[d]:.0f} s",
                )
            )
        # learn the usual interval from normal steps only
        normal = (dt > 0) & ((dt <= lim) | np.isnan(self.dt_s[frame.dev]))
        cnt = np.bincount(frame.seg_id, weights=normal, minlength=len(frame.first))
        tot = frame.seg_sum(np.where(normal, dt / NS, 0.0))
        has = cnt > 0
        dv = frame.seg_dev[has]
        mean = tot[has] / cnt[has]
        a = np.minimum(1.0, cnt[has] / 50.0) * 0.5
        self.dt_s[dv] = np.where(np.isnan(self.dt_s[dv]), mean, (1 - a) * self.dt_s[dv] + a * mean)
        last_ok = frame.seg_last_valid(ok)
        got = last_ok >= 0
        self.last_ok_ns[frame.seg_dev[got]] = frame.ts[last_ok[got]]
        # ongoing silence, judged at the newest time in the batch
        now = int(frame.ts.max())
        seen = self.last_ok_ns > 0
        all_dev = np.arange(self.ctx.n)
        silent = seen & (now - self.last_ok_ns > self._limit_ns(all_dev))
        due = self.gap.update_devices(all_dev, silent, seen & ~silent)
        for d in (int(x) for x in np.flatnonzero(due)):
            s = (now - int(self.last_ok_ns[d])) / NS
            out.append(
                Finding(
                    detector="data_quality.gap",
                    devices=(ids[d],),
                    score=s,
                    threshold=float(self._limit_ns(np.array([d]))[0] / NS),
                    window_start_ns=int(self.last_ok_ns[d]),
                    window_end_ns=now,
                    severity=Severity.INFO,
                    unit="s",
                    explanation=f"{ids[d]}: no valid reading for {s / 60:.0f} min, since "
                    f"{iso(int(self.last_ok_ns[d]))}",
                )
            )

    def _frozen(self, frame: Frame, out: list[Finding]) -> None:
        on = np.zeros(frame.n, dtype=bool)
        moving = np.zeros(frame.n, dtype=bool)
        any_field = np.zeros(frame.n, dtype=bool)
        which: dict[str, np.ndarray] = {}
        since_min = np.full(frame.n, np.iinfo(np.int64).max)
        for name, limit_s in FROZEN_S.items():
            if name not in frame.fields:
                continue
            v = frame.fields[name]
            valid = frame.valid(name)
            prev, has = frame.prev(name, self.ctx.mem(name))
            same = valid & has & (v == prev) & (v != 0)
            changed = valid & ~same
            since = frame.run_since(same, changed, self.frozen_since[name])
            self.frozen_since[name][frame.seg_dev] = since[frame.last]
            stuck = same & (frame.ts - since >= int(limit_s * NS))
            which[name] = stuck
            on |= stuck
            since_min = np.where(stuck, np.minimum(since_min, since), since_min)
            moving |= changed
            any_field |= valid
        if not which:
            return
        off = any_field & ~on & moving
        for r in self.frozen.update_rows(frame, on, off):
            names = [k for k, m in which.items() if m[r]]
            d = int(frame.dev[r])
            hours = (frame.ts[r] - since_min[r]) / NS / 3600
            out.append(
                Finding(
                    detector="data_quality.frozen_value",
                    devices=(self.ctx.ids[d],),
                    score=float(hours),
                    threshold=float(min(FROZEN_S[k] for k in names) / 3600),
                    window_start_ns=int(since_min[r]),
                    window_end_ns=int(frame.ts[r]),
                    unit="h",
                    explanation=f"{self.ctx.ids[d]}: {', '.join(names)} unchanged at "
                    f"{frame.fields[names[0]][r]:g} for {hours:.1f} h (stuck sensor or replayed "
                    "register)",
                )
            )

    def _skew(self, frame: Frame, out: list[Finding]) -> None:
        clock = frame.fields.get("device_clock_s")
        if clock is None:
            return
        valid = frame.valid("device_clock_s")
        idx = frame.seg_last_valid(valid)
        has = idx >= 0
        rows = idx[has]
        dev = frame.seg_dev[has]
        skew = clock[rows] - frame.ts[rows] / NS
        lim = self.clock_skew_s
        due = self.skew.update_devices(
            dev, np.abs(skew) > lim, np.abs(skew) < lim / 2, estimate=skew, material=lim
        )
        for i in np.flatnonzero(due):
            r, d = int(rows[i]), int(dev[i])
            out.append(
                Finding(
                    detector="data_quality.clock_skew",
                    devices=(self.ctx.ids[d],),
                    score=float(abs(skew[i])),
                    threshold=lim,
                    window_start_ns=int(frame.ts[r]),
                    window_end_ns=int(frame.ts[r]),
                    estimate=float(skew[i]),
                    unit="s",
                    explanation=f"{self.ctx.ids[d]}: device clock is {skew[i]:+.0f} s off the "
                    f"gateway clock (limit ±{lim:.0f} s)",
                )
            )


def interval_s(q: DataQuality) -> FloatArray:
    """The learned usual reading interval per device (NaN = not yet known)."""
    return q.dt_s
