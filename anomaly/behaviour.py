"""Behaviour: a streaming, unsupervised scorer and consumption-shift flags.

`SeasonalScorer` scores points of many series at once (one series per
device, or per device and field): no training data, it learns each series'
level (exponentially weighted, ~1 week) and its daily shape (24 hour-of-day
factors, ~2 weeks each) and robust spread (mean absolute deviation per
hour of day), and scores each new point before learning from it:

    z = (x - level · shape[hour]) / (1.25 · mad[hour] + floor),
    score = erf(|z| / √2)  ∈ [0, 1)  (0 during warm-up)

`ShiftDetector` uses the same expectation over a ~2-day window: the ratio
`R = Σx / Σexpected` against the device's own history, divided by the
median ratio of its peers (devices of the same kind) so that a holiday or a
cold week moves nobody, and the flatness `F` (how much of the expected
hour-to-hour swing is left). It raises, once per episode:

- `behaviour.zeroing`: R < 0.03 where the history makes zero rare;
- `behaviour.drop`: R / peers < 0.35;
- `behaviour.scaling`: R / peers in [0.35, 0.65] or above 2.5, shape intact;
- `behaviour.flattening`: F < 0.15 with the level about normal.

Failure modes handled: series in warm-up (no flags before `warmup_points`
and 7 days), zero expectations (floors), gaps (hour-of-day from the point's
own timestamp), several points per series in one call (applied in order).
"""

from __future__ import annotations

from math import sqrt

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from anomaly._common import DAY_NS, HOUR_NS, Latch, iso
from anomaly.batch import FloatArray, Int64Array
from anomaly.finding import Finding

IntpArray = npt.NDArray[np.intp]


class SeasonalScorer:
    """Level × daily-shape model per series; `update` returns a score per point."""

    def __init__(
        self, n: int, *, level_tau: float = 168.0, shape_tau: float = 14.0, warmup_points: int = 48
    ) -> None:
        self.n = n
        self.a_level = 1.0 / level_tau
        self.a_shape = 1.0 / shape_tau
        self.warmup = warmup_points
        self.level = np.zeros(n)
        self.shape = np.ones((n, 24))
        self.mad = np.zeros((n, 24))
        self.slot_n = np.zeros((n, 24), dtype=np.int32)
        self.count = np.zeros(n, dtype=np.int64)
        self.zero_frac = np.zeros(n)  # EW fraction of zero points
        self.first_ns = np.zeros(n, dtype=np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            k: getattr(self, k)
            for k in ("level", "shape", "mad", "slot_n", "count", "zero_frac", "first_ns")
        }

    def expected(self, idx: IntpArray, hour: IntpArray) -> FloatArray:
        return np.asarray(self.level[idx] * self.shape[idx, hour])

    def update(
        self, idx: IntpArray, ts_ns: Int64Array, x: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Score then learn points `x` of series `idx` at `ts_ns`: (scores, expected values)."""
        scores = np.zeros(len(idx))
        expect = np.full(len(idx), np.nan)
        good = np.isfinite(x)
        order = np.lexsort((ts_ns, idx))
        order = order[good[order]]
        if not len(order):
            return scores, expect
        si = idx[order]
        start = np.ones(len(si), dtype=bool)
        start[1:] = si[1:] != si[:-1]
        first = np.flatnonzero(start)
        rank = np.arange(len(si)) - np.repeat(first, np.diff(np.append(first, len(si))))
        for k in range(int(rank.max()) + 1):
            rows = order[rank == k]
            s, e = self._step(idx[rows], ts_ns[rows], x[rows])
            scores[rows] = s
            expect[rows] = e
        return scores, expect

    def _step(self, i: IntpArray, t: Int64Array, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        h = ((t // HOUR_NS) % 24).astype(np.intp)
        self.first_ns[i] = np.where(self.count[i] == 0, t, self.first_ns[i])
        mu = self.expected(i, h)
        spread = 1.25 * self.mad[i, h] + 0.02 * np.abs(self.level[i]) + 1e-9
        z = (x - mu) / spread
        warm = (self.count[i] >= self.warmup) & (self.slot_n[i, h] >= 2)
        score = np.where(warm, erf(np.abs(z) / sqrt(2.0)), 0.0)
        # learn: level from the de-seasonalised point, shape from the level-normalised point
        n = self.count[i]
        a_l = np.maximum(self.a_level, 1.0 / (n + 1))
        deseason = x / np.maximum(self.shape[i, h], 0.05)
        # a point far outside is learned slowly, so an anomaly does not become normal at once
        damp = np.where(warm & (np.abs(z) > 4), 0.25, 1.0)
        self.level[i] = self.level[i] + a_l * damp * (deseason - self.level[i])
        lvl = np.maximum(np.abs(self.level[i]), 1e-9)
        a_s = np.maximum(self.a_shape, 1.0 / (self.slot_n[i, h] + 1))
        self.shape[i, h] += a_s * damp * (x / lvl - self.shape[i, h])
        self.mad[i, h] += a_s * (np.minimum(np.abs(x - mu), 6 * spread) - self.mad[i, h])
        self.slot_n[i, h] += 1
        self.zero_frac[i] += np.maximum(self.a_level, 1.0 / (n + 1)) * (
            (x == 0).astype(float) - self.zero_frac[i]
        )
        self.count[i] += 1
        return score, mu


class ShiftDetector:
    """Sustained consumption shifts against own history and peers (per device)."""

    NAMES = ("behaviour.zeroing", "behaviour.drop", "behaviour.scaling", "behaviour.flattening")

    def __init__(self, n: int, *, window_points: float = 48.0, min_days: float = 7.0) -> None:
        self.n = n
        self.scorer = SeasonalScorer(n)
        self.a = 1.0 / window_points
        self.min_ns = int(min_days * DAY_NS)
        self.sx = np.zeros(n)  # EW of x
        self.smu = np.zeros(n)  # EW of expected
        self.fx = np.zeros(n)  # fast (~12 points) EW of x, to classify a shift once it settles
        self.fmu = np.zeros(n)
        self.dev_x = np.zeros(n)  # EW |x - EW x|  (actual swing)
        self.dev_mu = np.zeros(n)  # EW |mu - EW mu|  (expected swing)
        self.wn = np.zeros(n)  # points in the window
        self.last_score = np.zeros(n)
        self.last_ns = np.zeros(n, dtype=np.int64)
        self.latch = Latch(n)
        self.since = np.zeros(n, dtype=np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            k: getattr(self, k)
            for k in (
                "sx",
                "smu",
                "fx",
                "fmu",
                "dev_x",
                "dev_mu",
                "wn",
                "last_score",
                "last_ns",
                "since",
            )
        }
        out.update({f"scorer.{k}": v for k, v in self.scorer.arrays().items()})
        out.update(self.latch.arrays("latch"))
        return out

    def update(self, idx: IntpArray, ts_ns: Int64Array, x: FloatArray) -> None:
        """Feed per-period consumption `x` of devices `idx` (call in time order per device)."""
        sc = self.scorer
        warm_before = sc.count[idx] >= sc.warmup
        scores, mu = sc.update(idx, ts_ns, x)
        ok = np.isfinite(x) & np.isfinite(mu) & warm_before
        i, xv, m = idx[ok], x[ok], mu[ok]
        # several points of one device: np.add.at keeps each contribution
        a = self.a
        for arr, val, rate in (
            (self.sx, xv, a),
            (self.smu, m, a),
            (self.fx, xv, 1 / 12),
            (self.fmu, m, 1 / 12),
        ):
            prev = arr[i].copy()
            arr[i] = prev + rate * (val - prev)
        self.dev_x[i] += a * (np.abs(xv - self.sx[i]) - self.dev_x[i])
        self.dev_mu[i] += a * (np.abs(m - self.smu[i]) - self.dev_mu[i])
        self.wn[i] = np.minimum(self.wn[i] + 1, 1e9)
        self.last_score[idx] = scores
        self.last_ns[idx] = np.maximum(self.last_ns[idx], ts_ns)

    def findings(
        self, ids: tuple[str, ...], kind: npt.NDArray[np.int8], touched: IntpArray
    ) -> list[Finding]:
        """Evaluate devices `touched` against peers of the same kind."""
        if not len(touched):
            return []
        sc = self.scorer
        ratio = np.where(self.smu > 0, self.sx / np.where(self.smu > 0, self.smu, 1), np.nan)
        flat = np.where(
            self.dev_mu > 0, self.dev_x / np.where(self.dev_mu > 0, self.dev_mu, 1), np.nan
        )
        ready = (self.wn >= 1 / self.a) & (self.last_ns - sc.first_ns >= self.min_ns)
        peer = np.ones(self.n)
        for k in np.unique(kind[touched]):
            same = (kind == k) & ready & np.isfinite(ratio)
            if same.sum() >= 3:
                peer[kind == k] = max(float(np.median(ratio[same])), 1e-6)
        rel = ratio / peer
        fast = np.where(self.fmu > 0, self.fx / np.where(self.fmu > 0, self.fmu, 1), np.nan)
        fast_rel = fast / peer
        t = touched
        zero_rare = sc.zero_frac[t] < 0.2
        zeroing = ready[t] & zero_rare & (ratio[t] < 0.03)
        drop = ready[t] & ~zeroing & (rel[t] < 0.35)
        scaling = (
            ready[t]
            & ~zeroing
            & ~drop
            & (((rel[t] >= 0.35) & (rel[t] < 0.65)) | (rel[t] > 2.5))
            & (flat[t] > 0.5)
        )
        flattening = (
            ready[t]
            & ~zeroing
            & ~drop
            & ~scaling
            & (flat[t] < 0.15)
            & (rel[t] > 0.65)
            & (rel[t] < 1.5)
        )
        on = zeroing | drop | scaling | flattening
        # name the shift by where it has settled (fast window), not where the slow one is
        zeroing = on & zero_rare & (fast[t] < 0.03)
        drop = on & ~zeroing & (fast_rel[t] < 0.35)
        scaling = on & ~zeroing & ~drop & ~flattening
        off = ready[t] & (rel[t] > 0.8) & (rel[t] < 1.25) & (flat[t] > 0.4)
        was = self.latch.active[t]
        due = self.latch.update_devices(t, on, off)
        out: list[Finding] = []
        for j in np.flatnonzero(due):
            d = int(t[j])
            if not was[j]:
                self.since[d] = int(self.last_ns[d] - 2 / self.a * HOUR_NS)
            which = 0 if zeroing[j] else 1 if drop[j] else 2 if scaling[j] else 3
            name = self.NAMES[which]
            what = (
                "consumption fell to zero",
                "consumption dropped",
                "consumption scaled",
                "consumption lost its daily pattern",
            )[which]
            score = float(flat[d] if which == 3 else rel[d])
            thr = (0.03, 0.35, 0.65, 0.15)[which]
            out.append(
                Finding(
                    detector=name,
                    devices=(ids[d],),
                    score=score,
                    threshold=thr,
                    window_start_ns=int(self.since[d]),
                    window_end_ns=int(self.last_ns[d]),
                    estimate=float(rel[d]),
                    unit="ratio",
                    explanation=f"{ids[d]}: {what}: last 2 days at {ratio[d]:.2f} × its own "
                    f"expected level and {rel[d]:.2f} × after allowing for its peers "
                    f"({peer[d]:.2f}); daily swing at {flat[d]:.2f} × normal, since about "
                    f"{iso(int(self.since[d]))}",
                    details={
                        "ratio_own": float(ratio[d]),
                        "ratio_vs_peers": float(rel[d]),
                        "flatness": float(flat[d]),
                        "score": float(self.last_score[d]),
                    },
                )
            )
        return out
