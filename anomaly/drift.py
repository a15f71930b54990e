"""Drift detection on relative residual series: CUSUM, EWMA, estimate, trend, MPE date.

Each series is one device against one reference (its register against its
integrated power, a meter against its check meter, a gas corrector against
the conversion recomputed from p and T, a nozzle's flow against its sister
nozzles' median). Per period the caller supplies the relative residual
`e = measured / reference - 1` and a weight. For every series at once:

- CUSUM: `S± = max(0, S± ± e/σ - k)`, with `k` half the decision threshold
  in σ units but at least 0.5, alarm at `h` (9 by default: an in-control
  average run length of years at hourly periods);
- EWMA: `z = (1-λ) z + λ e`, limit `L σ sqrt(λ / (2-λ))`, alarm when `|z|`
  is over the limit and over the decision threshold (for `ewma_persist`
  periods in a row: a brief excursion of a noisy series is not a drift);
- σ from the moving range (`MR / 1.128`), which a persistent error does not
  inflate;
- the estimated error (exponentially weighted mean over `tau_periods`) with
  a 95 % confidence interval, its trend (weighted regression on time, per
  day), and the projected date on which it crosses the threshold.

Thresholds: `threshold` (fraction × MPE, as a fraction) is where an error
matters; the decision threshold is half of it (as in statistical inventory
reconciliation, where the decision threshold is at most half the minimum
detectable leak).

Failure modes handled: series with few periods (no alarm before
`min_periods`), zero or tiny σ (floored at a tenth of the decision
threshold), several periods of one series in one update (applied in time
order), residuals that are not finite (ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anomaly._common import DAY_NS, Latch, iso
from anomaly.batch import BoolArray, FloatArray, Int64Array
from anomaly.finding import Finding, Severity

IntpArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class DriftEstimate:
    """Per-series estimate: error (fraction), 95 % CI, trend per day, crossing time (ns, 0 none)."""

    error: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    trend_per_day: FloatArray
    crossing_ns: Int64Array


class DriftTracker:
    """CUSUM + EWMA + estimate/trend state for `n` residual series."""

    def __init__(
        self,
        n: int,
        *,
        tau_periods: float = 168.0,
        ewma_lambda: float = 0.1,
        ewma_l: float = 3.5,
        cusum_h: float = 9.0,
        min_periods: int = 12,
        ewma_persist: int = 1,
    ) -> None:
        self.n = n
        self.ewma_persist = ewma_persist
        self.a_est = 1.0 / tau_periods
        self.lam = ewma_lambda
        self.ewma_l = ewma_l
        self.h = cusum_h
        self.min_periods = min_periods
        self.count = np.zeros(n, dtype=np.int64)
        self.last_e = np.full(n, np.nan)
        self.mr = np.full(n, np.nan)
        self.ewma = np.zeros(n)
        self.s_pos = np.zeros(n)
        self.s_neg = np.zeros(n)
        self.ew_run = np.zeros(n, dtype=np.int64)  # consecutive periods over the EWMA limit
        # forgetting sums: w, w*e, w*e^2, w^2 (decayed twice as fast), w*t, w*t^2, w*t*e
        # (t in days since the series' first period)
        self.sums = np.zeros((n, 7))
        self.t0 = np.zeros(n, dtype=np.int64)
        self.t_last = np.zeros(n, dtype=np.int64)
        self.start_ns = np.zeros(n, dtype=np.int64)  # first period of the current excursion
        self.latch = Latch(n)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            k: getattr(self, k)
            for k in (
                "count",
                "last_e",
                "mr",
                "ewma",
                "s_pos",
                "s_neg",
                "ew_run",
                "sums",
                "t0",
                "t_last",
                "start_ns",
            )
        }
        out.update(self.latch.arrays("latch"))
        return out

    def sigma(self, idx: IntpArray, floor: FloatArray) -> FloatArray:
        s = np.nan_to_num(self.mr[idx] / 1.128, nan=np.inf)
        return np.maximum(s, floor)

    def update(
        self, idx: IntpArray, ts_ns: Int64Array, e: FloatArray, w: FloatArray, threshold: FloatArray
    ) -> None:
        """Add residuals `e` (weights `w`) at period ends `ts_ns` to series `idx`.

        `threshold` is the per-series alarm threshold (fraction) for these rows.
        """
        good = np.isfinite(e) & np.isfinite(w) & (w > 0)
        idx, ts_ns, e, w, threshold = idx[good], ts_ns[good], e[good], w[good], threshold[good]
        if not len(idx):
            return
        order = np.lexsort((ts_ns, idx))
        idx, ts_ns, e, w, threshold = (
            idx[order],
            ts_ns[order],
            e[order],
            w[order],
            threshold[order],
        )
        start = np.ones(len(idx), dtype=bool)
        start[1:] = idx[1:] != idx[:-1]
        first = np.flatnonzero(start)
        rank = np.arange(len(idx)) - np.repeat(first, np.diff(np.append(first, len(idx))))
        for k in range(int(rank.max()) + 1):
            m = rank == k
            self._step(idx[m], ts_ns[m], e[m], w[m], threshold[m])

    def _step(
        self, i: IntpArray, t: Int64Array, e: FloatArray, w: FloatArray, thr: FloatArray
    ) -> None:
        new = self.count[i] == 0
        self.t0[i] = np.where(new, t, self.t0[i])
        # moving range (robust sigma)
        mr_obs = np.abs(e - self.last_e[i])
        have = ~np.isnan(mr_obs)
        a_mr = np.where(self.count[i] < 20, 1.0 / np.maximum(self.count[i], 1), 0.05)
        mr = self.mr[i]
        mr = np.where(have & np.isnan(mr), mr_obs, mr)
        mr = np.where(
            have & ~np.isnan(self.mr[i]), mr + a_mr * (np.minimum(mr_obs, 6 * mr + 1e-12) - mr), mr
        )
        self.mr[i] = mr
        self.last_e[i] = e
        d = thr / 2.0
        sig = self.sigma(i, d / 10.0)
        warm = self.count[i] >= 3
        z = np.where(warm, e / sig, 0.0)
        k = np.maximum(d / (2.0 * sig), 0.5)
        self.s_pos[i] = np.maximum(0.0, self.s_pos[i] + z - k)
        self.s_neg[i] = np.maximum(0.0, self.s_neg[i] - z - k)
        self.ewma[i] = np.where(self.count[i] == 0, e, (1 - self.lam) * self.ewma[i] + self.lam * e)
        lim = self.ewma_l * sig * np.sqrt(self.lam / (2 - self.lam))
        over = warm & (np.abs(self.ewma[i]) > np.maximum(lim, d))
        self.ew_run[i] = np.where(over, self.ew_run[i] + 1, 0)
        # estimate and trend sums
        tau = (t - self.t0[i]) / DAY_NS
        f = 1.0 - self.a_est
        obs = np.column_stack([w, w * e, w * e * e, w * w, w * tau, w * tau * tau, w * tau * e])
        old = self.sums[i]
        old[:, 3] *= f
        self.sums[i] = f * old + obs
        self.count[i] += 1
        self.t_last[i] = t

    def estimate(self, idx: IntpArray, threshold: FloatArray) -> DriftEstimate:
        s = self.sums[idx]
        w = np.where(s[:, 0] > 0, s[:, 0], np.nan)
        mean = s[:, 1] / w
        var = np.maximum(s[:, 2] / w - mean**2, 0.0)
        n_eff = np.minimum(
            s[:, 0] ** 2 / np.where(s[:, 3] > 0, s[:, 3], np.nan), self.count[idx].astype(float)
        )
        sig = np.maximum(np.sqrt(var), np.nan_to_num(self.mr[idx] / 1.128))
        se = sig / np.sqrt(np.maximum(n_eff, 1.0))
        tm = s[:, 4] / w
        vt = s[:, 5] / w - tm**2
        slope = np.where(vt > 1e-9, (s[:, 6] / w - tm * mean) / np.where(vt > 1e-9, vt, 1), 0.0)
        now_days = (self.t_last[idx] - self.t0[idx]) / DAY_NS
        e_now = mean + slope * (now_days - tm)
        target = np.sign(slope) * threshold
        days = np.where(
            (slope != 0) & (np.abs(e_now) < threshold),
            (target - e_now) / np.where(slope != 0, slope, 1),
            np.nan,
        )
        crossing = np.where(
            np.isfinite(days) & (days > 0) & (days < 3650), self.t_last[idx] + (days * DAY_NS), 0
        ).astype(np.int64)
        return DriftEstimate(mean, mean - 1.96 * se, mean + 1.96 * se, slope, crossing)

    def alarms(self, idx: IntpArray, threshold: FloatArray) -> tuple[BoolArray, BoolArray]:
        """(cusum alarm, ewma alarm) for series `idx`."""
        d = threshold / 2.0
        sig = self.sigma(idx, d / 10.0)
        ready = self.count[idx] >= self.min_periods
        cus = ready & (np.maximum(self.s_pos[idx], self.s_neg[idx]) > self.h)
        lim = self.ewma_l * sig * np.sqrt(self.lam / (2 - self.lam))
        ew = ready & (np.abs(self.ewma[idx]) > np.maximum(lim, d))
        ew &= self.ew_run[idx] >= self.ewma_persist
        return cus, ew

    def findings(
        self,
        idx: IntpArray,
        names: tuple[str, ...] | list[str],
        threshold: FloatArray,
        *,
        detector: str,
        what: str,
        period_ns: int,
        devices: list[tuple[str, ...]] | None = None,
        group: str | None = None,
        material_fraction: float = 0.5,
        min_z: float = 0.0,
        offset_se: FloatArray | float = 0.0,
        beyond_z: float = 0.0,
    ) -> list[Finding]:
        """Findings for series `idx` whose alarm starts or whose estimate moved materially.

        `names[j]` names series `idx[j]` in the explanation; `devices[j]` (default
        `(names[j],)`) are the devices of the finding. An alarm is raised only when
        the estimated error is significant (`min_z` standard errors from zero) and,
        with `beyond_z`, that many standard errors beyond the decision threshold;
        `offset_se` adds the uncertainty of a learned baseline the residuals are
        taken against (an early CUSUM/EWMA alarm on a short, noisy start is not).
        """
        if not len(idx):
            return []
        cus, ew = self.alarms(idx, threshold)
        est = self.estimate(idx, threshold)
        se = np.hypot((est.ci_high - est.ci_low) / 3.92, offset_se)
        size = np.abs(est.error)
        sure = size >= min_z * se
        if beyond_z > 0:
            sure &= size - threshold / 2.0 >= beyond_z * se
        cus, ew = cus & sure, ew & sure
        on = cus | ew
        calm = (np.maximum(self.s_pos[idx], self.s_neg[idx]) < self.h / 3) & ~ew
        # a new excursion starts where the alarm is off
        was = self.latch.active[idx]
        due = self.latch.update_devices(
            idx,
            on,
            calm,
            estimate=est.error,
            material=threshold * material_fraction,
            now_ns=int(self.t_last[idx].max()),
        )
        out: list[Finding] = []
        for j in np.flatnonzero(due):
            s = int(idx[j])
            if not was[j]:
                self.start_ns[s] = self.t_last[s] - int(max(self.count[s], 1)) * period_ns
            err, lo, hi = est.error[j] * 100, est.ci_low[j] * 100, est.ci_high[j] * 100
            by = "CUSUM" if cus[j] else "EWMA"
            cross = int(est.crossing_ns[j])
            when = (
                (
                    f"; trend {est.trend_per_day[j] * 100:+.3f} pp/day, crosses "
                    f"±{threshold[j] * 100:.2f} % around {iso(cross)[:10]}"
                )
                if cross
                else (f"; trend {est.trend_per_day[j] * 100:+.3f} pp/day")
            )
            devs = devices[j] if devices is not None else (names[j],)
            out.append(
                Finding(
                    detector=detector,
                    devices=devs,
                    score=float(
                        max(self.s_pos[s], self.s_neg[s]) if cus[j] else abs(self.ewma[s]) * 100
                    ),
                    threshold=float(self.h if cus[j] else threshold[j] / 2 * 100),
                    window_start_ns=int(self.start_ns[s]),
                    window_end_ns=int(self.t_last[s]),
                    explanation=f"{names[j]}: {what} off by {err:+.2f} % (95 % CI {lo:+.2f} to "
                    f"{hi:+.2f} %), {by} alarm against a decision threshold of "
                    f"{threshold[j] * 50:.2f} % (half of {threshold[j] * 100:.2f} %){when}",
                    severity=(
                        Severity.CRITICAL if abs(est.error[j]) > threshold[j] else Severity.WARNING
                    ),
                    group=group,
                    estimate=float(err),
                    ci_low=float(lo),
                    ci_high=float(hi),
                    unit="%",
                    details={
                        "cusum_pos": float(self.s_pos[s]),
                        "cusum_neg": float(self.s_neg[s]),
                        "ewma_pct": float(self.ewma[s] * 100),
                        "trend_pp_per_day": float(est.trend_per_day[j] * 100),
                        "mpe_crossing_ns": float(cross),
                        "periods": float(self.count[s]),
                    },
                )
            )
        return out
