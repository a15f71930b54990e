"""Step changes in one nozzle's error, found in the tank's level-form points.

A nozzle whose pulser is edited or whose chip is switched on changes its
error at one moment; before and after, its error is constant. A fit with a
constant error per nozzle over a window that holds the change spreads the
step over every nozzle that sold at the same hours, so an honest nozzle gets
blamed (the hourly balance and `anomaly.tanklevel` both assume constant
errors). Here the change is modelled itself: for every nozzle `k` and every
candidate moment `m` the level-form regression of `anomaly.tanklevel`

    Y_i = Σ_j β_j X_ij + λ H_i + c_segment + e_i

gains one column, `U_i = X_ik - X_mk` for the points from `m` on in `m`'s
segment and `X_ik` in the later segments (the nozzle's sales since the
change), whose coefficient is the step. A step in λ (a leak that starts, a
gauge that shifts) is a candidate of the same form in H, so that a change of
the whole tank is not pinned on a nozzle.

Every candidate's generalised likelihood ratio comes from suffix sums over
the points, so the scan over all moments and columns costs O(n · p²) with no
matrix per candidate (the residual of the base fit is orthogonal to the
base columns, so only U's cross products with them and with itself are
needed). The scan returns per column the best moment, its z (step over its
standard error, gauge noise estimated from the base fit's residuals), the
step and the range of moments whose likelihood is within 2 log-units of the
best (an approximate 95 % interval for when it happened).

Failure modes handled: too few points or degenerate columns (a nozzle that
never sold, a moment with no sales after it) give z = 0; moments with fewer
than `min_side` points on either side are not candidates; a singular base
fit yields no result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anomaly._common import ridge_inverse
from anomaly.batch import FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class StepScan:
    """Best step per column (nozzles 0..J-1, then λ as column J)."""

    z: FloatArray  # signed z of the best moment per column (0 where none)
    step: FloatArray  # the step in β (volume unaccounted per volume sold; λ: per hour)
    step_se: FloatArray
    at: IntArray  # index of the best moment per column (-1 where none)
    first: IntArray  # earliest and latest moment within 2 log-units of the best
    last: IntArray
    beta: FloatArray  # base fit: β of the columns of c (λ last), then of the known steps
    sigma: float  # gauge noise of one point (base fit residual)


@dataclass(frozen=True, slots=True)
class _BaseFit:
    """Least squares with a constant per segment, and what the scan reuses of it."""

    zd: FloatArray  # regressors centred within their segment
    r: FloatArray  # residuals
    g_inv: FloatArray  # inverse of the centred normal matrix
    coef: FloatArray
    sigma2: float  # residual variance per point
    starts: IntArray  # first index of each segment
    seg_of: IntArray  # segment number (0..) of each point


def _base_fit(base: FloatArray, y: FloatArray, seg: IntArray) -> _BaseFit | None:
    n, p = base.shape
    starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1].astype(np.int64)
    sizes = np.diff(np.r_[starts, n])
    seg_of = np.repeat(np.arange(len(starts), dtype=np.int64), sizes)
    zd = base - (np.add.reduceat(base, starts, axis=0) / sizes[:, None])[seg_of]
    yd = y - (np.add.reduceat(y, starts) / sizes)[seg_of]
    dof = n - p - len(starts)
    if dof < 3:
        return None
    g = zd.T @ zd
    g_inv = ridge_inverse(g, floor=1e-9)
    if g_inv is None:
        return None
    coef = g_inv @ (zd.T @ yd)
    r = yd - zd @ coef
    sigma2 = float(r @ r) / dof
    if not sigma2 > 0:
        return None
    return _BaseFit(zd, r, g_inv, coef, sigma2, starts, seg_of)


@dataclass(frozen=True, slots=True)
class ColumnFit:
    """A least-squares fit with a constant per segment."""

    coef: FloatArray
    cov: FloatArray
    resid: FloatArray
    sigma2: float


def fit_columns(base: FloatArray, y: FloatArray, seg: IntArray) -> ColumnFit | None:
    """Least squares of `y` on `base` with a constant per segment (None if degenerate)."""
    fit = _base_fit(base, y, seg)
    if fit is None:
        return None
    return ColumnFit(fit.coef, fit.g_inv * fit.sigma2, fit.r, fit.sigma2)


def long_run_factor(resid: FloatArray, seg: IntArray, sigma2: float, *, block: int) -> float:
    """How much slower than white noise the residuals average out (≥ 1).

    The mean square of sums over `block` consecutive points of one segment,
    divided by `block` × σ²: 1 for white gauge noise, larger when the residuals
    wander (a chip that adds to some transactions only, thermal effects). The
    scan's z assumes white residuals; dividing z² by this factor keeps a
    wandering residual from looking like a step.
    """
    sums = []
    if len(seg) < 4 * block:
        return 1.0  # too few blocks to tell
    starts = np.r_[0, np.flatnonzero(np.diff(seg)) + 1, len(seg)]
    for a, b in itertools.pairwise(starts):
        nb = (b - a) // block
        if nb:
            sums.append(resid[a : a + nb * block].reshape(nb, block).sum(axis=1))
    if not sums or not sigma2 > 0:
        return 1.0
    s = np.concatenate(sums)
    return max(float(np.mean(s * s)) / (block * sigma2), 1.0)


def _segment_suffix(values: FloatArray, seg_of: IntArray, starts: IntArray) -> FloatArray:
    """Σ over i ≥ m within m's segment, for every m (rows of `values`)."""
    total = np.cumsum(values[::-1], axis=0)[::-1]
    nxt = seg_of + 1  # the next segment, whose suffix is subtracted
    beyond = np.zeros_like(values)
    has = nxt < len(starts)
    beyond[has] = total[starts[nxt[has]]]
    out: FloatArray = total - beyond
    return out


def step_column(x: FloatArray, seg: IntArray, m: int) -> FloatArray:
    """The regressor of a step at point `m` in cumulative column `x`: its growth since `m`."""
    after = np.arange(len(x)) >= m
    u = np.where(after, x, 0.0)
    u[after & (seg == seg[m])] -= x[m]
    return u


def scan_steps(
    c: FloatArray,
    y: FloatArray,
    seg: IntArray,
    *,
    min_side: int,
    known: FloatArray | None = None,
) -> StepScan | None:
    """Scan for one step in one column of `c` (n × q cumulative regressors, H last).

    `y` holds the cumulative unaccounted volume, `seg` the segment ids in
    time order (non-decreasing); `known` (n × r) holds the regressors of
    steps already found (`step_column`), fitted as part of the base so that
    the scan looks for the next one. Returns None when there are fewer than
    `2 * min_side` points or the base fit is singular.
    """
    n, q = c.shape
    if n < 2 * min_side + q + 2:
        return None
    base = c if known is None or not known.size else np.column_stack([c, known])
    fit = _base_fit(base, y, seg)
    if fit is None:
        return None
    zd, r, g_inv, seg_of, starts = fit.zd, fit.r, fit.g_inv, fit.seg_of, fit.starts
    sizes = np.diff(np.r_[starts, n])
    seg_r = _segment_suffix(r, seg_of, starts)
    seg_z = _segment_suffix(zd, seg_of, starts)
    seg_n = _segment_suffix(np.ones(n), seg_of, starts)
    seg_size = sizes[seg_of].astype(float)
    seg_end = np.r_[starts[1:], n][seg_of]  # first index after m's segment
    m_ok = np.zeros(n, dtype=bool)
    m_ok[min_side : n - min_side] = True
    out = StepScan(
        z=np.zeros(q),
        step=np.zeros(q),
        step_se=np.full(q, np.inf),
        at=np.full(q, -1, dtype=np.int64),
        first=np.full(q, -1, dtype=np.int64),
        last=np.full(q, -1, dtype=np.int64),
        beta=fit.coef,
        sigma=float(np.sqrt(fit.sigma2)),
    )
    for k in range(q):
        x = c[:, k]
        # U = x - x_m from m on within m's segment, x in every later segment, 0 before:
        # its products with r and the centred base follow from suffix sums (r and the
        # centred base sum to zero within every segment, so U needs no centring there)
        ur = np.cumsum((x * r)[::-1])[::-1] - x * seg_r
        uz = np.cumsum((x[:, None] * zd)[::-1], axis=0)[::-1] - x[:, None] * seg_z
        seg_x = _segment_suffix(x, seg_of, starts)
        seg_xx = _segment_suffix(x * x, seg_of, starts)
        su = seg_x - seg_n * x
        suu = seg_xx - 2 * x * seg_x + seg_n * x * x
        within = (x - (np.add.reduceat(x, starts) / sizes)[seg_of]) ** 2
        later_ss = np.r_[np.cumsum(within[::-1])[::-1], 0.0][seg_end]
        uu = suu - su * su / seg_size + later_ss
        perp = uu - np.einsum("ip,pq,iq->i", uz, g_inv, uz)
        good = m_ok & (perp > 1e-9 * np.maximum(uu, 1e-300))
        if not good.any():
            continue
        z = np.zeros(n)
        z[good] = ur[good] / np.sqrt(fit.sigma2 * perp[good])
        m = int(np.argmax(np.abs(z)))
        if z[m] == 0.0:
            continue
        near = np.flatnonzero(good & (z * z >= z[m] ** 2 - 4.0))
        out.z[k] = z[m]
        out.step[k] = ur[m] / perp[m]
        out.step_se[k] = np.sqrt(fit.sigma2 / perp[m])
        out.at[k] = m
        out.first[k], out.last[k] = int(near[0]), int(near[-1])
    return out
