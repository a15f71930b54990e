"""Reconciliation over balance groups: tank vs nozzles, feeder vs customers, bulk vs district.

Every group has a reference (tank gauge, feeder meter, bulk meter) and
members. Per period (one hour, from the period snapshots) the reference flow
is what passed the reference: for a tank `stock_open + deliveries -
stock_close` (net, 15 °C; the nozzles' sales, measured at product
temperature, are converted with the tank's net/gross ratio), for a feeder or
bulk meter its net advance. With member flows `x_j`, the unaccounted volume

    y = reference_flow - Σ x_j = Σ β_j x_j + λ · hours (+ γ · load²/hours) + noise

is fitted by least squares with exponential forgetting at three time scales
(1, 7 and 30 days). A member that registers `e_j` too much gives
`β_j = -e_j / (1 + e_j)`; λ is a constant loss per hour (a tank leak, a
district's leakage); γ models feeder losses that grow with load squared.

Findings:
- `reconciliation.tank_nozzle_error`: a nozzle's error `e_j` (%) with its
  95 % CI, when it exceeds the decision threshold (half of fraction × MPE)
  and is significant at some scale (z ≥ 5, 4.5, 4 at 1, 7, 30 days).
- `reconciliation.tank_leak`: λ as a leak rate in L/h, decided as in
  statistical inventory reconciliation: fail when the estimate exceeds the
  leak threshold (0.38 L/h, half of the 0.76 L/h minimum detectable leak)
  and is significant (z ≥ 5, 4, 3); the 30-day result pass / fail /
  inconclusive (inconclusive = the leak detectable with 95 % probability is
  above 0.76 L/h) is in the finding and in `report()`.
- `reconciliation.tank_balance` / `feeder_balance` / `bulk_balance`: the
  daily unaccounted fraction `Σy / Σreference` through CUSUM/EWMA (a step: a
  chip switched on, a customer bypassing), with the members ranked as likely
  culprits (`devices[1:]`). A tank is judged against zero; feeders and
  districts against the baseline of their first days (technical losses are
  never known exactly) at twice the reference's threshold, and their
  members are ranked by how well their own drop in consumption matches the
  step (DOMAIN.md), tanks by their 7-day β.

Per-member errors of feeders and districts are estimated (`report()`) but
not raised on their own: load-dependent losses that change from day to day
bias them more than the MPE of a customer meter.

Failure modes handled: periods where a device is missing or crossed a long
gap are skipped; outlying periods (a delivery booked before it is in the
tank, a gauge glitch: residual over 8 robust σ once the fit is warm) are
skipped and counted, three in a row are accepted as a real step; members
that never flow keep β = 0 (ridge) and are never flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from anomaly._common import DAY_NS, Latch, ridge_inverse
from anomaly.batch import FloatArray
from anomaly.drift import DriftTracker
from anomaly.finding import Finding, Severity
from anomaly.flowrate import TAU_DAYS as FLOW_TAU_DAYS
from anomaly.flowrate import Z_FLOW, NozzleFlows
from anomaly.tanklevel import TankLevelFit
from anomaly.tankstep import fit_columns, long_run_factor, scan_steps, step_column

SCALES_PERIODS = (24.0, 168.0, 720.0)
SCALE_NAMES = ("1 d", "7 d", "30 d")
CURRENT = "current"  # tanks: every level point held, with the steps found fitted
Z_MEMBER = (5.0, 4.5, 4.0)
Z_LOSS = (5.0, 4.0, 3.0)
LEAK_MDL_LPH = 0.76  # US EPA SIR: 0.2 gal/h
LEAK_THRESHOLD_LPH = 0.38  # decision threshold: half the minimum detectable leak
BASELINE_DAYS = 2.0
WARMUP = 6  # periods that only calibrate a group's residual scale
LEVEL_MIN_POINTS = 100  # idle gauge readings before a tank's level fit is reported
# a step in one nozzle's error (anomaly.tankstep): significance of the best moment, how
# much better the nozzle explains it than every other nozzle (log-likelihood ratio; 4.6 =
# 100 : 1), its least size as a fraction of the nozzle's threshold, the points it needs on
# either side, and how many found steps the scan keeps fitting while their moment is held
Z_STEP = 7.0
STEP_LLR = 4.6
STEP_MATERIAL = 0.2
STEP_MIN_SIDE = 30
STEP_KNOWN = 8
STEP_BLOCK = 24  # points per block when measuring how the residuals wander
STEP_RECENT = 384  # points (~2 days) on either side of a step whose wander is measured alone


@dataclass(frozen=True, slots=True)
class MemberEstimate:
    device: str
    error_pct: float
    ci_low_pct: float
    ci_high_pct: float
    scale: str
    periods: float


@dataclass(frozen=True, slots=True)
class GroupReport:
    """A balance group's current estimates (for the API and reports)."""

    group: str
    type: str
    periods_used: int
    periods_skipped: int
    members: tuple[MemberEstimate, ...]
    loss_per_h: float  # λ: tank leak L/h, or unmetered flow per hour
    loss_ci: tuple[float, float]
    sir_result: str  # tank only: pass / fail / inconclusive ("" otherwise)
    unaccounted_pct: float
    # every member's estimate at each time scale ("1 d", "7 d", "30 d"); tanks also
    # "current": over every level point held with the steps found fitted (`periods` there
    # counts the points)
    scales: Mapping[str, tuple[MemberEstimate, ...]] = field(default_factory=dict)

    def member(self, device: str, scale: str | None = None) -> MemberEstimate:
        """`device`'s estimate (the reported one, or at `scale`); KeyError if not a member."""
        pool = self.members if scale is None else self.scales.get(scale, ())
        for m in pool:
            if m.device == device:
                return m
        raise KeyError(f"{device!r} is not a member of {self.group} (or no {scale} estimate)")


def _utc(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")


def flow(kind: str, delta: FloatArray) -> FloatArray:
    """A member's or reference's flow over periods from snapshot deltas (rows × slots)."""
    if kind == "gas":
        return np.where(np.isfinite(delta[:, 1]), delta[:, 1], delta[:, 0])
    if kind in ("electricity", "water"):
        return delta[:, 0] - np.nan_to_num(delta[:, 1])
    return delta[:, 0]


class BalanceGroup:
    """Streaming regression state of one balance group."""

    def __init__(
        self,
        *,
        gid: str,
        type: str,
        ref: int,
        members: Sequence[int],
        ref_kind: str,
        member_kinds: Sequence[str],
        ids: Sequence[str],
        member_threshold: FloatArray,
        ref_threshold: float,
        technical_loss_pct: float = 0.0,
    ) -> None:
        self.gid, self.type = gid, type
        self.ref, self.members = ref, np.asarray(members, dtype=np.intp)
        self.ref_kind, self.member_kinds = ref_kind, tuple(member_kinds)
        self.ids = ids
        self.member_threshold = np.asarray(member_threshold, dtype=float)
        self.ref_threshold = ref_threshold
        j = len(members)
        # a tank is judged absolutely, and its balance moves by a cheating nozzle's error
        # times its share of the sales: the nozzles' threshold divided by their number.
        # Feeders and districts are judged against a learned baseline of a few days,
        # which is noisier: twice the reference's threshold.
        self.balance_threshold = (
            float(np.min(self.member_threshold)) / max(j, 1)
            if type == "tank"
            else ref_threshold * 2.0
        )
        self.tl = technical_loss_pct / 100.0
        self.quadratic = type == "feeder"
        p = j + 1 + int(self.quadratic)  # members, hours (, load squared on feeders)
        s = len(SCALES_PERIODS)
        self.A = np.zeros((s, p, p))
        self.b = np.zeros((s, p))
        self.yy = np.zeros(s)
        self.w = np.zeros(s)
        self.w2 = np.zeros(s)
        self.ref_sum = np.zeros(s)
        self.n_used = np.zeros(1, dtype=np.int64)
        self.n_skipped = np.zeros(1, dtype=np.int64)
        self.res_scale = np.full(1, np.nan)
        self.next_b = np.full(1, -1, dtype=np.int64)
        self.day = np.zeros(3)  # running day sums: y, ref, periods
        self.day_idx = np.full(1, -1, dtype=np.int64)
        self.member_latch = Latch(j)
        self.loss_latch = Latch(1)
        self.tracker = DriftTracker(1, tau_periods=30.0, min_periods=3)
        self.last_t = np.zeros(1, dtype=np.int64)
        self.step_beta = np.zeros(p)  # long-scale β when the balance alarm started
        self.base = np.zeros(2)  # baseline daily unaccounted fraction: sum, days
        self.mday = np.zeros(j)  # member flows today
        self.mbase = np.zeros(j)  # member daily flows summed over the baseline days
        self.mrecent = np.zeros(j)  # member daily flows, recent (EW over ~2 days)
        self.mrecent_n = np.zeros(1, dtype=np.int64)
        self.recent_step = np.zeros(1)  # the balance's recent departure from its baseline
        self.n_rejected_run = np.zeros(1, dtype=np.int64)
        self.calib = np.zeros(WARMUP)  # first periods' |unaccounted| for the robust scale
        self.n_calib = np.zeros(1, dtype=np.int64)
        self._solved: dict[int, tuple[FloatArray, FloatArray, float]] = {}
        # tanks: the level-form fit over idle gauge readings (anomaly.tanklevel), which
        # estimates the nozzles' errors far more precisely than hourly differences
        self.level = TankLevelFit(j) if type == "tank" else None
        # steps found in the nozzles' errors: (nozzle, moment ns), -1 = free slot
        self.steps = np.full((STEP_KNOWN, 2), -1, dtype=np.int64)
        # tanks: each nozzle's daily flow rate against its own and its sisters' (flowrate)
        self.flows = NozzleFlows(j) if type == "tank" else None
        self.flow_latch = Latch(j)

    @property
    def devices(self) -> npt.NDArray[np.intp]:
        return np.concatenate([[self.ref], self.members]).astype(np.intp)

    def forget_cache(self) -> None:
        """Drop cached solutions (after the arrays were replaced by a restore)."""
        self._solved.clear()
        if self.level is not None:
            self.level.forget_cache()

    def arrays(self) -> dict[str, np.ndarray]:
        """Every state array (live references; configuration arrays excluded)."""
        out = {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, np.ndarray) and k not in ("members", "member_threshold")
        }
        out.update(self.member_latch.arrays("member_latch"))
        out.update(self.loss_latch.arrays("loss_latch"))
        out.update({f"tracker.{k}": v for k, v in self.tracker.arrays().items()})
        if self.level is not None:
            out.update({f"level.{k}": v for k, v in self.level.arrays().items()})
        if self.flows is not None:
            out.update({f"flows.{k}": v for k, v in self.flows.arrays().items()})
            out.update(self.flow_latch.arrays("flow_latch"))
        return out

    # -- fitting ----------------------------------------------------------------------

    def _solve(self, s: int) -> tuple[FloatArray, FloatArray, float]:
        """(β with λ last, standard errors, residual σ per period) at scale `s`."""
        hit = self._solved.get(s)
        if hit is None:
            hit = self._solved[s] = self._solve_now(s)
        return hit

    def _solve_now(self, s: int) -> tuple[FloatArray, FloatArray, float]:
        a = self.A[s]
        p = a.shape[0]
        inv = ridge_inverse(a, floor=1e-9)
        if inv is None:
            return np.zeros(p), np.full(p, np.inf), np.inf
        beta = inv @ self.b[s]
        w = self.w[s]
        n_eff = w * w / self.w2[s] if self.w2[s] > 0 else 0.0
        dof = max(n_eff - p, 1.0)
        ssr = max(self.yy[s] - beta @ self.b[s], 0.0)
        sigma2 = ssr / w * n_eff / dof if w > 0 else np.inf
        # weights are forgetting factors (≤ 1); scale inv by w / n_eff for effective counts
        se = np.sqrt(np.maximum(np.diag(inv) * sigma2 * (w / n_eff if n_eff > 0 else np.inf), 0.0))
        return beta, se, float(np.sqrt(sigma2))

    def add_period(self, x: FloatArray, ref_flow: float, hours: float, t_ns: int) -> None:
        """Add one period: member flows `x`, reference flow, its length in hours, its end."""
        self._day_add(t_ns, ref_flow * (1 - self.tl) - float(np.sum(x)), ref_flow, x)
        xv, y, ok = self._period_row(x, ref_flow, hours)
        self._solved.clear()
        if not ok:
            return
        for s, tau in enumerate(SCALES_PERIODS):
            f = 1.0 - 1.0 / tau  # the newest period weighs 1, older ones decay
            self.A[s] = f * self.A[s] + np.outer(xv, xv)
            self.b[s] = f * self.b[s] + xv * y
            self.yy[s] = f * self.yy[s] + y * y
            self.w[s] = f * self.w[s] + 1.0
            self.w2[s] = f * f * self.w2[s] + 1.0
            self.ref_sum[s] = f * self.ref_sum[s] + ref_flow
        self.n_used[0] += 1
        self.last_t[0] = t_ns

    def _period_row(
        self, x: FloatArray, ref_flow: float, hours: float
    ) -> tuple[FloatArray, float, bool]:
        """Regress each period's unaccounted flow on member flows.

        The regression models losses itself (λ: constant, γ: growing with load squared
        on feeders), so the configured technical loss only centres the daily balance.
        """
        y = ref_flow - float(np.sum(x))
        xv = np.append(x, hours)
        if self.quadratic:
            xv = np.append(xv, float(np.sum(x)) ** 2 / max(hours, 1e-9))
        # robust scale of the residual: the first WARMUP periods only calibrate it (their
        # median), so that a glitch early on cannot poison the fit
        warm = self.n_used[0] >= 24
        r = abs(y - float(xv @ self._solve(len(SCALES_PERIODS) - 1)[0])) if warm else abs(y)
        if self.n_calib[0] < WARMUP:
            self.calib[self.n_calib[0]] = r
            self.n_calib[0] += 1
            if self.n_calib[0] == WARMUP:
                self.res_scale[0] = max(float(np.median(self.calib)), 1e-9)
            return xv, y, False
        scale = self.res_scale[0]
        if r > 8 * 1.25 * scale and self.n_rejected_run[0] < 3:
            self.n_skipped[0] += 1
            self.n_rejected_run[0] += 1
            return xv, y, False
        self.n_rejected_run[0] = 0
        self.res_scale[0] = scale + (0.05 if warm else 0.2) * (min(r, 6 * scale) - scale)
        return xv, y, True

    def _day_add(self, t_ns: int, y_period: float, ref_flow: float, x: FloatArray) -> None:
        day = t_ns // DAY_NS
        if self.day_idx[0] >= 0 and day != self.day_idx[0]:
            if self.day[2] >= 20 and self.day[1] > 0:
                full = self.mday * 24.0 / self.day[2]
                if self.type != "tank" and self.base[1] < BASELINE_DAYS:
                    self.mbase += full
                else:
                    new = self.mrecent_n[0] == 0
                    self.mrecent[:] = full if new else 0.5 * self.mrecent + 0.5 * full
                    self.mrecent_n[0] += 1
                self._day_done(self.day[0] / self.day[1])
            self.day[:] = 0.0
            self.mday[:] = 0.0
        self.day_idx[0] = day
        self.day += (y_period, ref_flow, 1.0)
        self.mday += x

    def _day_done(self, e: float) -> None:
        """Feed one day's unaccounted fraction to the balance tracker.

        Feeders and bulk groups first learn their usual loss for `BASELINE_DAYS`
        (technical losses are never known exactly) and then watch for steps
        from it; a tank is judged against zero from the start.
        """
        if self.type != "tank":
            if self.base[1] < BASELINE_DAYS:
                self.base += (e, 1.0)
                return
            e -= self.base[0] / self.base[1]
        self.recent_step[0] = e if self.mrecent_n[0] <= 1 else 0.5 * self.recent_step[0] + 0.5 * e
        self.tracker.update(
            np.array([0]),
            np.array([int(self.day_idx[0]) * DAY_NS + DAY_NS]),
            np.array([e]),
            np.array([1.0]),
            np.array([self.balance_threshold]),
        )

    # -- decisions --------------------------------------------------------------------

    def _member_errors(self) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.intp]]:
        """Per member: (error fraction, se, z) of the scale that fires first, and its index."""
        j = len(self.members)
        best_err = np.zeros(j)
        best_se = np.full(j, np.inf)
        best_z = np.zeros(j)
        best_s = np.full(j, -1, dtype=np.intp)
        for s in range(len(SCALES_PERIODS)):
            if self.w[s] < max(3 * (j + 1), 24):
                continue
            if self.type != "tank" and s < len(SCALES_PERIODS) - 1:
                # load-dependent technical losses bias short windows: judge feeders and
                # districts on the long window only
                continue
            beta, se, _ = self._solve(s)
            b = beta[:j]
            err = -b / (1 + b)
            z = np.abs(b) / np.where(se[:j] > 0, se[:j], np.inf)
            # a tank gauge is an absolute reference: decide at half the threshold; feeders and
            # bulk meters only compare members with each other: decide at the full threshold
            decide = self.member_threshold / 2 if self.type == "tank" else self.member_threshold
            fires = (np.abs(err) > decide) & (z >= Z_MEMBER[s])
            # prefer the longest firing scale (most precise); else keep the most precise one
            better = fires | (best_s < 0)
            best_err = np.where(better, err, best_err)
            best_se = np.where(better, se[:j], best_se)
            best_z = np.where(better, np.where(fires, z, 0.0), best_z)
            best_s = np.where(fires, s, best_s)
        return best_err, best_se, best_z, best_s

    def _loss(self) -> tuple[float, float, int, bool]:
        """(λ, se, scale, fires) for the constant-loss term."""
        j = len(self.members)
        best = (0.0, np.inf, -1, False)
        for s in range(len(SCALES_PERIODS)):
            if self.w[s] < max(3 * (j + 1), 24):
                continue
            beta, se, _ = self._solve(s)
            lam, lse = float(beta[j]), float(se[j])
            if self.type == "tank":
                thr = LEAK_THRESHOLD_LPH
            else:
                mean_ref = self.ref_sum[s] / self.w[s]
                thr = self.ref_threshold / 2 * abs(mean_ref)
            fires = lam > thr and lam / lse >= Z_LOSS[s] if lse > 0 else False
            if fires or (not best[3] and lse < best[1]):
                best = (lam, lse, s, fires)
        return best

    def sir_result(self) -> tuple[str, float, float]:
        """SIR decision on the 30-day scale: (pass/fail/inconclusive, leak L/h, its se)."""
        s = len(SCALES_PERIODS) - 1
        j = len(self.members)
        if self.w[s] < 24:
            return "inconclusive", float("nan"), float("inf")
        beta, se, _ = self._solve(s)
        lam, lse = float(beta[j]), float(se[j])
        if lam > LEAK_THRESHOLD_LPH and lam / lse >= Z_LOSS[s]:
            return "fail", lam, lse
        mdl = LEAK_THRESHOLD_LPH + 1.645 * lse
        return (
            "pass" if mdl <= LEAK_MDL_LPH and lam <= LEAK_THRESHOLD_LPH else "inconclusive",
            lam,
            lse,
        )

    def findings(self, period_ns: int) -> list[Finding]:
        out: list[Finding] = []
        if not self.n_used[0]:
            return out
        t = int(self.last_t[0])
        ids = self.ids
        balance = self._balance_findings(t)
        err, se, z, scale = self._member_errors()
        fires = scale >= 0
        if self.type != "tank":
            # member errors on feeders and districts are only identified up to the way
            # losses vary: they rank the culprits of a balance step instead (report())
            fires[:] = False
        calm = ~fires & (np.abs(err) < self.member_threshold / 4)
        due = self.member_latch.update_devices(
            np.arange(len(self.members)),
            fires,
            calm,
            estimate=err,
            material=self.member_threshold / 2,
            now_ns=t,
        )
        name = {
            "tank": "reconciliation.tank_nozzle_error",
            "feeder": "reconciliation.feeder_member_error",
            "bulk": "reconciliation.bulk_member_error",
        }.get(self.type, f"reconciliation.{self.type}_member_error")
        for k in np.flatnonzero(due):
            dev = ids[int(self.members[k])]
            s = int(scale[k])
            lo, hi = err[k] - 1.96 * se[k], err[k] + 1.96 * se[k]
            thr = self.member_threshold[k]
            periods = min(self.n_used[0], SCALES_PERIODS[s])
            rel = ""
            word = "over" if err[k] > 0 else "under"
            out.append(
                Finding(
                    detector=name,
                    devices=(dev, ids[self.ref]),
                    group=self.gid,
                    score=float(abs(err[k]) * 100),
                    threshold=float(thr / 2 * 100),
                    window_start_ns=int(t - periods * period_ns),
                    window_end_ns=t,
                    estimate=float(err[k] * 100),
                    ci_low=float(lo * 100),
                    ci_high=float(hi * 100),
                    unit="%",
                    severity=Severity.CRITICAL if abs(err[k]) > thr else Severity.WARNING,
                    explanation=f"{dev} {word}-registers by {err[k] * 100:+.3f} % (95 % CI "
                    f"{lo * 100:+.3f} to {hi * 100:+.3f} %){rel} against {ids[self.ref]} over "
                    f"{SCALE_NAMES[s]} ({periods:.0f} periods, z {z[k]:.1f}); decision threshold "
                    f"{thr * 50:.3f} % = half of {thr * 100:.2f} %",
                    details={
                        "z": float(z[k]),
                        "periods": float(periods),
                        "scale_days": SCALES_PERIODS[s] / 24,
                    },
                )
            )
        out.extend(self._loss_findings(t, period_ns))
        if self.level is not None:
            out.extend(self._step_findings(t))
        if self.flows is not None:
            out.extend(self._flow_findings(t))
        out.extend(balance)
        return out

    def add_flows(
        self,
        ts: list[npt.NDArray[np.int64]],
        flow: list[FloatArray],
        state: list[FloatArray],
    ) -> None:
        """Feed each nozzle's flow-rate readings (`anomaly.flowrate`); tanks only."""
        if self.flows is not None:
            self.flows.add(ts, flow, state)

    def _flow_findings(self, t: int) -> list[Finding]:
        assert self.flows is not None
        est, se = self.flows.decision()
        z = np.abs(est) / se
        decide = self.member_threshold / 2
        fires = (z >= Z_FLOW) & (np.abs(est) > decide)
        due = self.flow_latch.update_devices(
            np.arange(len(self.members)),
            fires,
            z < 2.0,
            estimate=est,
            material=self.member_threshold / 2,
            now_ns=t,
        )
        out = []
        ref = self.ids[self.ref]
        for k in np.flatnonzero(due):
            dev = self.ids[int(self.members[k])]
            pct, lo, hi = (
                float(np.expm1(v) * 100)
                for v in (est[k], est[k] - 1.96 * se[k], est[k] + 1.96 * se[k])
            )
            word = "above" if est[k] > 0 else "below"
            out.append(
                Finding(
                    detector="behaviour.flow_rate",
                    devices=(dev, ref),
                    group=self.gid,
                    score=abs(pct),
                    threshold=float(decide[k] * 100),
                    window_start_ns=int(t - 2 * FLOW_TAU_DAYS * DAY_NS),
                    window_end_ns=t,
                    estimate=pct,
                    ci_low=lo,
                    ci_high=hi,
                    unit="%",
                    explanation=f"{dev} reports a flow while dispensing {pct:+.2f} % (95 % CI "
                    f"{lo:+.2f} to {hi:+.2f} %) {word} its own first days, relative to its "
                    f"sister nozzles on {ref}, over the last days (z {z[k]:.1f}); a pulser chip "
                    f"or an edited K-factor raises the flow a nozzle reports by its cheat "
                    f"factor. Decision: z ≥ {Z_FLOW:g} and over {decide[k] * 100:.2f} %",
                    details={"z": float(z[k])},
                )
            )
        return out

    def _known_steps(
        self, ts: npt.NDArray[np.int64], c: FloatArray, seg: npt.NDArray[np.int64]
    ) -> list[tuple[int, FloatArray]]:
        """(nozzle, regressor) of each step found whose moment is still among the points held.

        Steps older than the points held are forgotten: their nozzle's error since
        then is simply its constant error.
        """
        out = []
        for i, (col, at_ns) in enumerate(self.steps):
            m = int(np.searchsorted(ts, at_ns)) if col >= 0 else 0
            if m <= 0 or m >= len(ts):
                self.steps[i] = -1
                continue
            out.append((int(col), step_column(c[:, col], seg, m)))
        return out

    def current_errors(self) -> tuple[FloatArray, FloatArray] | None:
        """Each nozzle's error now (fraction, se): the fit over every level point held with
        the steps found fitted, so a nozzle's error is the one since its last step.
        None before the tank's level fit has `LEVEL_MIN_POINTS` points."""
        if self.level is None or self.level.ring_pos[1] < LEVEL_MIN_POINTS:
            return None
        ts, c, y, seg = self.level.recent()
        j = len(self.members)
        known = self._known_steps(ts, c, seg)
        fit = fit_columns(np.column_stack([c, *(u for _, u in known)]), y, seg)
        if fit is None:
            return None
        coef, cov = fit.coef, fit.cov
        # the current β of nozzle k: its constant plus every step of it found
        a = np.zeros((j, len(coef)))
        a[np.arange(j), np.arange(j)] = 1.0
        for i, (col, _) in enumerate(known):
            a[col, c.shape[1] + i] = 1.0
        beta = a @ coef
        se = np.sqrt(np.maximum(np.einsum("kp,pq,kq->k", a, cov, a), 0.0))
        return -beta / (1 + beta), se / (1 + beta) ** 2

    def _step_findings(self, t: int) -> list[Finding]:
        """Scan the tank's level points for a step in one nozzle's error (`anomaly.tankstep`).

        A step is raised when it is significant (z ≥ `Z_STEP`), explained by one
        nozzle better than by every other nozzle (log-likelihood ratio ≥ `STEP_LLR`)
        and better than by a change of the tank itself (a step in λ), and material
        (≥ `STEP_MATERIAL` × the nozzle's threshold). It is then fitted as known, so
        each step is raised once and the scan looks for the next (a chip switched off).
        """
        assert self.level is not None
        ts, c, y, seg = self.level.recent()
        j = len(self.members)
        known = [u for _, u in self._known_steps(ts, c, seg)]
        extra = np.column_stack(known) if known else None
        scan = scan_steps(c, y, seg, min_side=STEP_MIN_SIDE, known=extra)
        if scan is None:
            return []
        az = np.abs(scan.z)
        order = np.argsort(-az[:j])
        k = int(order[0])
        runner = int(order[1]) if j > 1 else j
        if not (az[k] >= Z_STEP and az[k] > az[j]):
            return []
        m = int(scan.at[k])
        base = np.column_stack([c, *known, step_column(c[:, k], seg, m)])
        fit = fit_columns(base, y, seg)
        if fit is None:
            return []
        # the scan assumes white residuals: once the step is fitted, whatever still
        # wanders in them (a chip on some transactions only) discounts the evidence
        # (over all the points held, and over the ~2 days on either side of the moment,
        # where a chip switched on lately shows undiluted by the weeks before it)
        kappa = max(
            long_run_factor(fit.resid[part], seg[part], fit.sigma2, block=STEP_BLOCK)
            for part in (
                slice(None),
                slice(max(m - STEP_RECENT, 0), m),
                slice(m, min(m + STEP_RECENT, len(ts))),
            )
        )
        z_k = float(az[k]) / np.sqrt(kappa)
        llr = (az[k] ** 2 - az[runner] ** 2) / 2 / kappa
        if not (z_k >= Z_STEP and llr >= STEP_LLR):
            return []
        coef = fit.coef
        b0, b1 = float(coef[k]), float(coef[k] + coef[-1])
        e0, e1 = -b0 / (1 + b0), -b1 / (1 + b1)
        step = e1 - e0
        step_se = float(np.sqrt(fit.cov[-1, -1] * kappa)) / (1 + b1) ** 2
        thr = float(self.member_threshold[k])
        if abs(step) < STEP_MATERIAL * thr:
            return []
        free = np.flatnonzero(self.steps[:, 0] < 0)
        slot = int(free[0]) if len(free) else int(np.argmin(self.steps[:, 1]))
        self.steps[slot] = (k, ts[m])
        dev, ref = self.ids[int(self.members[k])], self.ids[self.ref]
        other = self.ids[int(self.members[runner])] if runner < j else "a change of the tank"
        lo, hi = step - 1.96 * step_se, step + 1.96 * step_se
        t_from, t_to = int(ts[scan.first[k]]), int(ts[scan.last[k]])
        return [
            Finding(
                detector="reconciliation.tank_nozzle_step",
                devices=(dev, ref),
                group=self.gid,
                score=abs(step) * 100,
                threshold=STEP_MATERIAL * thr * 100,
                window_start_ns=int(ts[0]),
                window_end_ns=t,
                estimate=step * 100,
                ci_low=lo * 100,
                ci_high=hi * 100,
                unit="%",
                severity=Severity.CRITICAL if abs(e1) > thr else Severity.WARNING,
                explanation=f"{dev}'s error stepped by {step * 100:+.3f} % (95 % CI "
                f"{lo * 100:+.3f} to {hi * 100:+.3f} %) between {_utc(t_from)} and "
                f"{_utc(t_to)}: {e0 * 100:+.3f} % before, {e1 * 100:+.3f} % after, against "
                f"{ref} over {len(ts)} idle gauge readings (z {z_k:.1f}; {other} explains "
                f"it e^{llr:.1f} times less well). A meter's registration does not step by "
                f"itself: an edited pulser or K-factor, or a chip switched on or off. "
                f"Decision: z ≥ {Z_STEP:g} and a step of at least {STEP_MATERIAL * thr * 100:.3f}"
                f" % ({STEP_MATERIAL:g} × {thr * 100:.2f} %)",
                details={
                    "z": z_k,
                    "llr": float(llr),
                    "residual_wander": kappa,
                    "error_before_pct": e0 * 100,
                    "error_after_pct": e1 * 100,
                    "change_from_ns": float(t_from),
                    "change_to_ns": float(t_to),
                    "points": float(len(ts)),
                },
            )
        ]

    def _loss_findings(self, t: int, period_ns: int) -> list[Finding]:
        if self.type != "tank":
            # feeders and district meters have legitimate constant losses; their changes
            # show in the balance tracker
            return []
        lam, lse, s, fires = self._loss()
        calm = not fires and (
            lam < (LEAK_THRESHOLD_LPH / 2 if self.type == "tank" else np.inf) or s < 0
        )
        due = self.loss_latch.update_devices(
            np.array([0]),
            np.array([fires]),
            np.array([calm]),
            estimate=np.array([lam]),
            material=np.array([max(abs(lam) / 2, 1e-9)]),
        )
        if not due[0]:
            return []
        ref = self.ids[self.ref]
        periods = min(self.n_used[0], SCALES_PERIODS[s])
        lo, hi = lam - 1.96 * lse, lam + 1.96 * lse
        if self.type == "tank":
            result, _, _ = self.sir_result()
            return [
                Finding(
                    detector="reconciliation.tank_leak",
                    devices=(ref,),
                    group=self.gid,
                    score=lam,
                    threshold=LEAK_THRESHOLD_LPH,
                    window_start_ns=int(t - periods * period_ns),
                    window_end_ns=t,
                    estimate=lam,
                    ci_low=lo,
                    ci_high=hi,
                    unit="L/h",
                    severity=Severity.CRITICAL,
                    explanation=f"{ref}: tank loses {lam:.2f} L/h (95 % CI {lo:.2f} to {hi:.2f}) "
                    f"not accounted for by its nozzles over {SCALE_NAMES[s]}; SIR decision "
                    f"threshold {LEAK_THRESHOLD_LPH} L/h (half of {LEAK_MDL_LPH} L/h); 30-day SIR "
                    f"result: {result}",
                    details={
                        "z": lam / lse if lse > 0 else float("inf"),
                        "periods": float(periods),
                    },
                )
            ]
        mean_ref = self.ref_sum[s] / self.w[s]
        return [
            Finding(
                detector=f"reconciliation.{self.type}_loss",
                devices=(ref,),
                group=self.gid,
                score=lam,
                threshold=float(self.ref_threshold / 2 * abs(mean_ref)),
                window_start_ns=int(t - periods * period_ns),
                window_end_ns=t,
                estimate=lam,
                ci_low=lo,
                ci_high=hi,
                unit="per hour",
                explanation=f"{ref}: {lam:.3g} per hour ({lam / mean_ref * 100:.1f} % of the "
                f"reference flow) passes {ref} but no member meter, beyond technical losses, over "
                f"{SCALE_NAMES[s]} (unmetered load, illegal connection or leak)",
                details={"z": lam / lse if lse > 0 else float("inf"), "periods": float(periods)},
            )
        ]

    def _balance_findings(self, t: int) -> list[Finding]:
        idx = np.array([0], dtype=np.intp)
        thr = np.array([self.balance_threshold])
        was = bool(self.tracker.latch.active[0])
        offset_se, beyond = 0.0, 0.0
        if self.type != "tank" and self.base[1] > 0:
            # feeders and districts are judged against a baseline of a few days: its own
            # day-to-day noise shifts every later day alike, so a step must stand out
            # beyond the decision threshold by more than that
            sigma_day = float(np.nan_to_num(self.tracker.mr[0] / 1.128, nan=0.0))
            offset_se, beyond = sigma_day / np.sqrt(self.base[1]), 1.0
        found = self.tracker.findings(
            idx,
            [self.gid],
            thr,
            min_z=2.0,
            offset_se=offset_se,
            beyond_z=beyond,
            detector=f"reconciliation.{self.type}_balance",
            what="unaccounted fraction of the reference flow",
            period_ns=DAY_NS,
            devices=[(self.ids[self.ref],)],
            group=self.gid,
        )
        if not found:
            return []
        # rank members: who explains the step? a member under-registering by e shows as
        # β = -e/(1+e); rank by the 7-day β in the direction of the step, in se units
        j = len(self.members)
        beta_w, se_w, _ = self._solve(1)
        step_sign = np.sign(found[0].estimate or 0.0) or 1.0
        score = step_sign * beta_w[:j] / np.where(se_w[:j] > 0, se_w[:j], np.inf)
        if self.type != "tank" and self.base[1] > 0 and self.mrecent_n[0] > 0:
            # DOMAIN: rank customers by how well their own drop matches the step
            usual = self.mbase / self.base[1]
            missing = usual - self.mrecent
            # the step in flow units: its recent level times the usual daily flow
            step_abs = float(self.recent_step[0]) * float(np.sum(usual))
            # log-likelihood of "member j made the step" against "nobody did", with each
            # member's own day-to-day spread (~15 % of its usual flow): a big customer's
            # natural swing counts for less than the same drop of a small one
            spread2 = (0.15 * np.abs(usual)) ** 2 + 1e-12
            score = (2.0 * missing * step_abs - step_abs**2) / spread2
        order = np.argsort(-score)
        ranked = [self.ids[int(self.members[k])] for k in order]
        est = -beta_w[:j] / (1 + beta_w[:j])
        top = ", ".join(
            f"{self.ids[int(self.members[k])]} ({est[k] * 100:+.2f} %)" for k in order[:3]
        )
        if not was:
            self.step_beta[:] = beta_w
        f = found[0]
        return [
            Finding(
                detector=f.detector,
                devices=(self.ids[self.ref], *ranked),
                group=self.gid,
                score=f.score,
                threshold=f.threshold,
                window_start_ns=f.window_start_ns,
                window_end_ns=f.window_end_ns,
                severity=f.severity,
                estimate=f.estimate,
                ci_low=f.ci_low,
                ci_high=f.ci_high,
                unit=f.unit,
                details=f.details,
                explanation=f"{f.explanation}; likely culprits: {top}",
            )
        ]

    def _estimates(
        self, err: FloatArray, se: FloatArray, scale: str, periods: float
    ) -> tuple[MemberEstimate, ...]:
        """Each member's error (fraction) and se as percent estimates with a 95 % CI."""
        return tuple(
            MemberEstimate(
                self.ids[int(m)],
                float(err[k] * 100),
                float((err[k] - 1.96 * se[k]) * 100),
                float((err[k] + 1.96 * se[k]) * 100),
                scale,
                periods,
            )
            for k, m in enumerate(self.members)
        )

    def report(self) -> GroupReport:
        err, se, _, scale = self._member_errors()
        members = tuple(
            MemberEstimate(
                self.ids[int(m)],
                float(err[k] * 100),
                float((err[k] - 1.96 * se[k]) * 100),
                float((err[k] + 1.96 * se[k]) * 100),
                SCALE_NAMES[int(scale[k])] if scale[k] >= 0 else "",
                float(min(self.n_used[0], 720)),
            )
            for k, m in enumerate(self.members)
        )
        lam, lse, _, _ = self._loss()
        result = self.sir_result()[0] if self.type == "tank" else ""
        unacc = float(self.tracker.estimate(np.array([0]), np.array([1.0])).error[0] * 100)
        j = len(self.members)
        scales: dict[str, tuple[MemberEstimate, ...]] = {}
        level = self.level
        use_level = level is not None and level.n_points[0] >= LEVEL_MIN_POINTS
        for s, name in enumerate(SCALE_NAMES):
            if level is not None and use_level:
                beta, se_s = level.estimate(s)
                if not np.isfinite(se_s[:j]).all():
                    continue
            else:
                if self.w[s] < j + 2:
                    continue
                beta, se_s, _ = self._solve(s)
            e = -beta[:j] / (1 + beta[:j])
            periods = float(min(self.n_used[0], SCALES_PERIODS[s]))
            scales[name] = self._estimates(e, se_s[:j], name, periods)
        now = self.current_errors()
        if now is not None and self.level is not None:
            held = float(self.level.ring_pos[1])
            scales[CURRENT] = self._estimates(now[0], now[1], CURRENT, held)
        return GroupReport(
            self.gid,
            self.type,
            int(self.n_used[0]),
            int(self.n_skipped[0]),
            members,
            lam,
            (lam - 1.96 * lse, lam + 1.96 * lse),
            result,
            unacc,
            scales,
        )
