"""Tank balance in level form over idle moments: per-nozzle errors from every gauge reading.

The hourly balance (`anomaly.reconciliation`) differences two interpolated
stock snapshots per period, so each period carries the gauge noise of two
readings and consecutive periods share one (residuals with lag-1 correlation
-0.5; least squares on them wastes most of the information), and it uses one
snapshot an hour although the gauge reports every few minutes.

Here every tank reading taken at an *idle moment* (every nozzle's readings
just before and at/after it show no dispensing, state != 1, and an unchanged
totalizer) is a point: nothing is in flight, so the stock and the
totalizers are known exactly at the same instant, without interpolation and
without the level waves and lags of dispensing. Within a *segment* (between
deliveries, long gaps or gauge glitches) the cumulative unaccounted volume

    Y_i = Σ_j β_j · X_ij + λ · H_i + c_segment + e_i

(X_ij the nozzle's cumulative sales since the segment started, converted
with the tank's net/gross ratio; H_i hours) has white gauge noise e_i; the
segment constant c absorbs the first reading's noise and any delivery
volume error. The fit is weighted least squares with exponential
forgetting in time (1, 7, 30 days), segment-centred by the exponentially
weighted (Welford) update. Residual autocorrelation (thermal effects, slow
gauge drift) is measured at lag one and widens the standard errors by
sqrt((1+ρ)/(1-ρ)) when positive.

The latest `RING_POINTS` points are also kept as they are, for the scan for
a step in one nozzle's error (`anomaly.tankstep`), which needs the points
themselves rather than sums.

Failure modes handled: a reading whose nozzles cannot be bracketed (no
nozzle reading yet after it, a nozzle gap longer than `MAX_BRACKET_S`) is
skipped; a delivery (the delivery register moved), a gap of more than
`MAX_GAP_S`, a totalizer going backwards or an outlying step (over 8 robust
σ) starts a new segment.
"""

from __future__ import annotations

import numpy as np

from anomaly._common import ridge_inverse
from anomaly.batch import FloatArray

NS = 1_000_000_000
SCALES_H = (24.0, 168.0, 720.0)  # forgetting time constants: 1, 7, 30 days
LONG = 2
MAX_BRACKET_S = 600.0
MAX_GAP_S = 3 * 3600.0
OUTLIER_SIGMA = 8.0
WARM_POINTS = 12
RING_POINTS = 8192  # points kept for the step scan (anomaly.tankstep): ~42 d at 5-min gauges


class TankLevelFit:
    """Streaming level-form regression of one tank group (J nozzles)."""

    def __init__(self, j: int) -> None:
        p = j + 1
        s = len(SCALES_H)
        self.j = j
        self.A = np.zeros((s, p, p))
        self.b = np.zeros((s, p))
        self.yy = np.zeros(s)
        self.w = np.zeros(s)
        self.w2 = np.zeros(s)
        self.nseg = np.zeros(s)  # exponentially weighted number of segments
        self.seg_w = np.zeros(s)
        self.seg_mz = np.zeros((s, p))
        self.seg_my = np.zeros(s)
        self.cum = np.zeros(p + 1)  # X_1..X_J, H, Y within the segment
        # last point: its time (ns; -1 = none) and net, deliveries, net/gross
        self.last_t = np.full(1, -1, dtype=np.int64)
        self.last = np.full(4, np.nan)
        self.last_tot = np.full(j, np.nan)
        # each nozzle's latest reading: ts (ns; -1 = none), totalizer, state
        self.nz_t = np.full(j, -1, dtype=np.int64)
        self.nz = np.full((j, 3), np.nan)
        self.scale = np.full(1, np.nan)  # robust σ of one step's residual
        self.ac = np.zeros(3)  # EW Σ r_i r_(i-1), Σ r_i², last residual (30 d)
        self.n_points = np.zeros(1, dtype=np.int64)
        # the latest points as the step scan needs them: time, segment number, cumulative
        # X_1..X_J and H, and Y; `ring_pos` = (next slot, points held)
        self.ring_t = np.full(RING_POINTS, -1, dtype=np.int64)
        self.ring_seg = np.zeros(RING_POINTS, dtype=np.int64)
        self.ring_c = np.zeros((RING_POINTS, p))
        self.ring_y = np.zeros(RING_POINTS)
        self.ring_pos = np.zeros(2, dtype=np.int64)
        self._solved: dict[int, tuple[FloatArray, FloatArray, float]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}

    def forget_cache(self) -> None:
        self._solved.clear()

    # -- input ----------------------------------------------------------------------

    def add_readings(
        self,
        tank_ts: np.ndarray,
        tank: FloatArray,
        nozzle_ts: list[np.ndarray],
        nozzle_tot: list[FloatArray],
        nozzle_state: list[FloatArray],
    ) -> None:
        """Add a batch: tank readings (ts, rows of net, gross, deliveries) and each nozzle's.

        All arrays hold valid readings in time order; readings older than what
        was already seen are ignored.
        """
        j = self.j
        ts_l, tot_l, st_l = [], [], []
        for k in range(j):
            keep = nozzle_ts[k] > self.nz_t[k]
            prev = self.nz[k]
            if self.nz_t[k] >= 0:
                ts_l.append(np.concatenate([self.nz_t[k : k + 1], nozzle_ts[k][keep]]))
                tot_l.append(np.concatenate([[prev[1]], nozzle_tot[k][keep]]))
                st_l.append(np.concatenate([[prev[2]], nozzle_state[k][keep]]))
            else:
                ts_l.append(nozzle_ts[k][keep])
                tot_l.append(nozzle_tot[k][keep])
                st_l.append(nozzle_state[k][keep])
            if len(ts_l[k]):
                self.nz_t[k] = ts_l[k][-1]
                self.nz[k] = (0.0, tot_l[k][-1], st_l[k][-1])
        if not len(tank_ts):
            return
        idle = np.ones(len(tank_ts), dtype=bool)
        tots = np.zeros((len(tank_ts), j))
        lim = int(MAX_BRACKET_S * NS)
        for k in range(j):
            t = ts_l[k]
            if not len(t):
                idle[:] = False
                continue
            a = np.searchsorted(t, tank_ts, side="left") - 1  # last strictly before
            bi = np.searchsorted(t, tank_ts, side="left")  # first at or after
            ok = (a >= 0) & (bi < len(t))
            a_, b_ = np.clip(a, 0, len(t) - 1), np.clip(bi, 0, len(t) - 1)
            ok &= (t[b_] - t[a_]) <= lim
            ok &= np.abs(tot_l[k][b_] - tot_l[k][a_]) < 1e-6
            ok &= (st_l[k][a_] != 1) & (st_l[k][b_] != 1)
            idle &= ok
            tots[:, k] = tot_l[k][a_]
        last_t = int(self.last_t[0])
        for i in np.flatnonzero(idle & (tank_ts > last_t)):
            net, gross, dl = tank[i]
            ratio = net / gross if np.isfinite(gross) and gross > 0 else 1.0
            if np.isfinite(net) and np.isfinite(dl):
                self._point(int(tank_ts[i]), float(net), float(dl), float(ratio), tots[i])

    def _point(self, t_ns: int, net: float, dl: float, ratio: float, tot: FloatArray) -> None:
        j = self.j
        last = self.last
        new_seg = (
            self.last_t[0] < 0
            or t_ns - int(self.last_t[0]) > MAX_GAP_S * NS
            or dl != last[2]
            or bool(np.any(tot < self.last_tot - 1e-6))
            or not 0.9 < ratio < 1.1
        )
        if not new_seg:
            k = 0.5 * (ratio + last[3])
            dx = (tot - self.last_tot) * k
            dh = (t_ns - int(self.last_t[0])) / (3600 * NS)
            # unaccounted = what left the stock minus what the nozzles sold
            dy = -(net - last[1]) - float(np.sum(dx))
            r = dy - float(np.append(dx, dh) @ self._solve(LONG)[0])
            sc = self.scale[0]
            if np.isfinite(sc) and self.n_points[0] > WARM_POINTS:
                if abs(r) > OUTLIER_SIGMA * 1.25 * sc:
                    new_seg = True
                else:
                    self.scale[0] = sc + 0.01 * (min(abs(r), 6 * sc) - sc)
            else:
                self.scale[0] = abs(r) if not np.isfinite(sc) else sc + 0.2 * (abs(r) - sc)
        if new_seg:
            self.cum[:] = 0.0
            self.seg_w[:] = 0.0
            self.ac[2] = np.nan
        else:
            self.cum[:j] += dx
            self.cum[j] += dh
            self.cum[j + 1] += dy
        self._ring_push(t_ns, new_seg)
        prev_t = int(self.last_t[0])
        dt_h = 0.0 if prev_t < 0 else max((t_ns - prev_t) / (3600 * NS), 0.0)
        self.last_t[0] = t_ns
        self.last[:] = (0.0, net, dl, ratio)
        self.last_tot[:] = tot
        z, y = self.cum[: j + 1].copy(), float(self.cum[j + 1])
        self._solved.clear()
        for s, tau in enumerate(SCALES_H):
            f = float(np.exp(-dt_h / tau))
            self.A[s] *= f
            self.b[s] *= f
            self.yy[s] *= f
            self.w[s] = f * self.w[s] + 1.0
            self.w2[s] = f * f * self.w2[s] + 1.0
            self.nseg[s] = f * self.nseg[s] + (1.0 if new_seg else 0.0)
            w_old = f * self.seg_w[s]
            w_new = w_old + 1.0
            dz = z - self.seg_mz[s]
            dyc = y - self.seg_my[s]
            c = w_old / w_new
            self.A[s] += c * np.outer(dz, dz)
            self.b[s] += c * dz * dyc
            self.yy[s] += c * dyc * dyc
            self.seg_mz[s] += dz / w_new
            self.seg_my[s] += dyc / w_new
            self.seg_w[s] = w_new
        self.n_points[0] += 1
        # lag-one autocorrelation of the level residuals (long scale)
        s_l = LONG
        if self.seg_w[s_l] > 2:
            beta = self._solve(s_l)[0]
            res = (y - self.seg_my[s_l]) - float((z - self.seg_mz[s_l]) @ beta)
            f = float(np.exp(-dt_h / SCALES_H[s_l]))
            if np.isfinite(self.ac[2]):
                self.ac[0] = f * self.ac[0] + res * self.ac[2]
            self.ac[1] = f * self.ac[1] + res * res
            self.ac[2] = res

    def _ring_push(self, t_ns: int, new_seg: bool) -> None:
        head, held = (int(v) for v in self.ring_pos)
        prev = self.ring_seg[(head - 1) % RING_POINTS] if held else 0
        self.ring_t[head] = t_ns
        self.ring_seg[head] = prev + 1 if new_seg else prev
        self.ring_c[head] = self.cum[: self.j + 1]
        self.ring_y[head] = self.cum[self.j + 1]
        self.ring_pos[:] = ((head + 1) % RING_POINTS, min(held + 1, RING_POINTS))

    def recent(self) -> tuple[np.ndarray, FloatArray, FloatArray, np.ndarray]:
        """The points held for the step scan, oldest first: (t_ns, X_1..X_J + H, Y, segment)."""
        head, held = (int(v) for v in self.ring_pos)
        order = (np.arange(held) + head - held) % RING_POINTS
        return self.ring_t[order], self.ring_c[order], self.ring_y[order], self.ring_seg[order]

    # -- output ---------------------------------------------------------------------

    def rho(self) -> float:
        """Lag-one autocorrelation of the level residuals (0 until measured)."""
        return float(np.clip(self.ac[0] / self.ac[1], -0.9, 0.9)) if self.ac[1] > 0 else 0.0

    def _solve(self, s: int) -> tuple[FloatArray, FloatArray, float]:
        hit = self._solved.get(s)
        if hit is None:
            hit = self._solved[s] = self._solve_now(s)
        return hit

    def _solve_now(self, s: int) -> tuple[FloatArray, FloatArray, float]:
        """(β, se, σ² per point scaled for the effective count, autocorrelation included)."""
        sums = (self.yy[s], self.w[s], self.w2[s], self.nseg[s])
        return self._fit(self.A[s], self.b[s], sums, self.rho())

    def _fit(
        self, a: FloatArray, bv: FloatArray, sums: tuple[float, float, float, float], rho: float
    ) -> tuple[FloatArray, FloatArray, float]:
        """Solve normal equations; `sums` = (Σw·y², Σw, Σw², weighted segment count)."""
        yy, w, w2, nseg = (float(x) for x in sums)
        p = a.shape[0]
        inv = ridge_inverse(a, floor=1e-6)
        if inv is None:
            return np.zeros(p), np.full(p, np.inf), np.inf
        beta = inv @ bv
        n_eff = w * w / w2 if w2 > 0 else 0.0
        dof = n_eff - p - nseg
        if w <= 0 or dof < 3:
            return beta, np.full(p, np.inf), np.inf
        ssr = max(yy - float(beta @ bv), 0.0)
        sigma2 = ssr / w * n_eff / dof
        infl = (1 + rho) / (1 - rho) if rho > 0 else 1.0
        s2 = sigma2 * (w / n_eff) * infl
        se = np.sqrt(np.maximum(np.diag(inv) * s2, 0.0))
        return beta, se, float(s2)

    def estimate(self, s: int) -> tuple[FloatArray, FloatArray]:
        """(β with λ last, standard errors) at scale `s`; se = inf until enough points."""
        if self.w[s] < 3 * (self.j + 2):
            return np.zeros(self.j + 1), np.full(self.j + 1, np.inf)
        beta, se, _ = self._solve(s)
        return beta, se
