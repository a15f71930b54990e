"""Integrity detectors: events that need no statistics, found on the first reading.

- `integrity.counter_rollback`: a cumulative register went backwards (not a
  rollover at its register width: those are unwrapped silently).
- `integrity.parameter_change`: the calibration parameter (K-factor) or its
  audit counter changed. Zero tolerance.
- `integrity.tamper_event`: magnet or cover event counters incremented, or
  a magnet flag raised.
- `integrity.event_counter`: programming / register-clear / corrector audit
  counter incremented.
- `integrity.reverse_flow`: backward water register rose or the meter's
  reverse-flow flag came on.
- `integrity.reverse_energy`: the export register of an import-only
  customer rose.
- `integrity.voltage_loss`: a phase below 78 % of nominal while it carries
  current (clears above 85 %).
- `integrity.current_loss`: a phase carries no current while its voltage is
  present and another phase carries load, for `current_loss_min_s`.
- `integrity.open_phase`: a phase below 60 % of nominal with no current while
  another phase is live, for 60 s (DL/T 698.45 open phase).
- `integrity.neutral_mismatch`: single-phase live and neutral currents differ.
- `integrity.energy_without_power`: the import register advanced while power
  read zero at both ends of the interval.

Failure modes handled: first reading of a device (no previous value: only
level conditions are checked), rollover at decimal or binary register widths
(scaled), invalid or missing fields (skipped per row), repeated events
(rate-limited per device, the count goes into the finding).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from anomaly._common import HOUR_NS, NS, Context, Latch, RateLimit, iso
from anomaly._frame import Frame
from anomaly.batch import FloatArray
from anomaly.finding import Finding, Severity

COUNTERS = (
    "energy_import_kwh",
    "energy_export_kwh",
    "volume_forward_m3",
    "volume_reverse_m3",
    "volume_unconverted_m3",
    "volume_converted_m3",
    "totalizer_volume_l",
    "totalizer_amount",
    "transaction_counter",
    "deliveries_net_l",
)

# event counter field -> (detector, what it counts)
EVENT_COUNTERS: Mapping[str, tuple[str, str]] = {
    "magnet_events": ("integrity.tamper_event", "magnetic-field tamper events"),
    "cover_events": ("integrity.tamper_event", "cover-open events"),
    "event_counter": ("integrity.event_counter", "programming/audit events"),
    "parameter_change_counter": ("integrity.parameter_change", "parameter-change audit counter"),
}

PHASES = (
    ("voltage_l1_v", "current_l1_a"),
    ("voltage_l2_v", "current_l2_a"),
    ("voltage_l3_v", "current_l3_a"),
)

OPEN_PHASE_MIN_NS = 60 * NS  # DL/T 698.45: the condition must hold for 60 s

_WIDTHS = np.array(
    sorted(
        {float(10**k) for k in range(1, 16)}
        | {float(2**b) * 10.0**-s for b in (16, 32, 48) for s in range(4)}
    )
)

TRACKED = (
    *COUNTERS,
    *EVENT_COUNTERS,
    "calibration_k_factor",
    "magnet_flag",
    "reverse_flow_flag",
    "power_total_w",
)


def rollover_width(prev: FloatArray, cur: FloatArray) -> FloatArray:
    """Register width W where `prev -> cur` is a rollover (cur + W - prev small), else NaN."""
    pos = np.searchsorted(_WIDTHS, prev, side="right")
    w = _WIDTHS[np.minimum(pos, len(_WIDTHS) - 1)]
    d = cur + w - prev
    ok = (pos < len(_WIDTHS)) & (prev >= 0.9 * w) & (d >= 0) & (d <= 0.01 * w)
    return np.where(ok, w, np.nan)


class Integrity:
    """Per-reading integrity checks for all devices at once."""

    def __init__(
        self, ctx: Context, *, current_loss_min_s: float = 3600.0, event_holdoff_s: float = 3600.0
    ) -> None:
        self.ctx = ctx
        n = ctx.n
        self.offset: dict[str, FloatArray] = {c: np.zeros(n) for c in COUNTERS}
        self.rate: dict[str, RateLimit] = {
            name: RateLimit(n, int(event_holdoff_s * NS))
            for name in (
                "rollback",
                *EVENT_COUNTERS,
                "k_factor",
                "reverse_flow",
                "reverse_energy",
                "energy_without_power",
            )
        }
        self.latch = {
            name: Latch(n)
            for name in (
                "magnet_flag",
                "reverse_flow_flag",
                "voltage_loss",
                "current_loss",
                "open_phase",
                "neutral_mismatch",
                "low_pf",
                "reverse_power",
                "continuous_flow",
            )
        }
        self.u_nom = np.full(n, np.nan)
        self.loss_since = np.zeros(n, dtype=np.int64)  # current-loss condition start
        self.open_since = np.zeros(n, dtype=np.int64)  # open-phase condition start
        self.pf_since = np.zeros(n, dtype=np.int64)  # low power factor under load since
        self.flow_since = np.zeros(n, dtype=np.int64)  # uninterrupted water flow since
        self.current_loss_min_ns = int(current_loss_min_s * NS)

    # -- state ------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {f"offset.{k}": v for k, v in self.offset.items()}
        out.update({f"rate.{k}": r.last_ns for k, r in self.rate.items()})
        for k, latch in self.latch.items():
            out.update(latch.arrays(f"latch.{k}"))
        out["u_nom"] = self.u_nom
        out["loss_since"] = self.loss_since
        out["open_since"] = self.open_since
        out["pf_since"] = self.pf_since
        out["flow_since"] = self.flow_since
        return out

    # -- processing -------------------------------------------------------------------

    def process(self, frame: Frame) -> list[Finding]:
        out: list[Finding] = []
        self._counters(frame, out)
        self._events(frame, out)
        self._flags(frame, out)
        self._electricity(frame, out)
        self._power_checks(frame, out)
        self._energy_without_power(frame, out)
        return out

    def _find(
        self,
        out: list[Finding],
        frame: Frame,
        row: int,
        detector: str,
        *,
        score: float,
        threshold: float,
        explanation: str,
        start_ns: int | None = None,
        severity: Severity = Severity.WARNING,
        unit: str | None = None,
        details: Mapping[str, float] | None = None,
    ) -> None:
        t = int(frame.ts[row])
        dev = self.ctx.ids[int(frame.dev[row])]
        out.append(
            Finding(
                detector=detector,
                devices=(dev,),
                score=float(score),
                threshold=float(threshold),
                window_start_ns=t if start_ns is None else int(start_ns),
                window_end_ns=t,
                explanation=f"{dev}: {explanation}",
                severity=severity,
                unit=unit,
                details=dict(details or {}),
            )
        )

    def _counters(self, frame: Frame, out: list[Finding]) -> None:
        ctx = self.ctx
        for name in COUNTERS:
            if name not in frame.fields:
                continue
            v = frame.fields[name]
            valid = frame.valid(name)
            prev, has = frame.prev(name, ctx.mem(name))
            chk = valid & has
            delta = np.where(chk, v - prev, 0.0)
            back = chk & (delta < -(1e-9 * np.abs(prev) + 1e-6))
            add = np.zeros(frame.n)
            rows = np.flatnonzero(back)
            if len(rows):
                w = rollover_width(prev[rows], v[rows])
                roll = ~np.isnan(w)
                add[rows[roll]] = w[roll]
                real = rows[~roll]
                add[real] = prev[real] - v[real]  # keep the unwrapped series continuous
                for r in self.rate["rollback"].first_per_device(frame, real):
                    n_back = int(np.sum(frame.dev[real] == frame.dev[r]))
                    self._find(
                        out,
                        frame,
                        int(r),
                        "integrity.counter_rollback",
                        score=float(prev[r] - v[r]),
                        threshold=0.0,
                        severity=Severity.CRITICAL,
                        unit=name.rsplit("_", 1)[-1],
                        explanation=f"{name} went back from {prev[r]:.3f} to {v[r]:.3f} at "
                        f"{iso(int(frame.ts[r]))} ({n_back} time(s) in this batch); an honest "
                        "register never decreases",
                        details={
                            "previous": float(prev[r]),
                            "current": float(v[r]),
                            "count": float(n_back),
                        },
                    )
            off = self.offset[name]
            run = off[frame.dev] + frame.seg_cumsum(add)
            frame.cont[name] = np.where(valid, v + run, np.nan)
            if frame.n:
                off[frame.seg_dev] = run[frame.last]

    def _events(self, frame: Frame, out: list[Finding]) -> None:
        ctx = self.ctx
        for name, (detector, what) in EVENT_COUNTERS.items():
            if name not in frame.fields:
                continue
            v = frame.fields[name]
            prev, has = frame.prev(name, ctx.mem(name))
            chk = frame.valid(name) & has
            inc = np.flatnonzero(chk & (v > prev))
            dec = np.flatnonzero(chk & (v < prev))
            severity = (
                Severity.CRITICAL
                if detector == "integrity.parameter_change"
                else (Severity.WARNING)
            )
            for r in self.rate[name].first_per_device(frame, inc):
                d = int(frame.dev[r])
                total = float(np.sum((v - prev)[inc][frame.dev[inc] == d]))
                self._find(
                    out,
                    frame,
                    int(r),
                    detector,
                    score=total,
                    threshold=0.0,
                    severity=severity,
                    explanation=f"{what} rose by {total:g} (to {v[r]:g}) at "
                    f"{iso(int(frame.ts[r]))}",
                    details={"previous": float(prev[r]), "current": float(v[r])},
                )
            for r in self.rate["rollback"].first_per_device(frame, dec):
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.counter_rollback",
                    score=float(prev[r] - v[r]),
                    threshold=0.0,
                    severity=Severity.CRITICAL,
                    explanation=f"{name} ({what}) went back from {prev[r]:g} to "
                    f"{v[r]:g}: the event log was cleared",
                    details={"previous": float(prev[r]), "current": float(v[r])},
                )
        if "calibration_k_factor" in frame.fields:
            v = frame.fields["calibration_k_factor"]
            prev, has = frame.prev(
                "calibration_k_factor",
                ctx.mem("calibration_k_factor"),
            )
            chg = (
                frame.valid("calibration_k_factor") & has & (np.abs(v - prev) > 1e-9 * np.abs(prev))
            )
            for r in self.rate["k_factor"].first_per_device(frame, np.flatnonzero(chg)):
                rel = float((v[r] - prev[r]) / prev[r] * 100.0) if prev[r] else float("inf")
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.parameter_change",
                    score=abs(rel),
                    threshold=0.0,
                    severity=Severity.CRITICAL,
                    unit="%",
                    explanation=f"calibration K-factor changed from {prev[r]:g} to "
                    f"{v[r]:g} ({rel:+.3f} %) at {iso(int(frame.ts[r]))}",
                    details={"previous": float(prev[r]), "current": float(v[r])},
                )

    def _flags(self, frame: Frame, out: list[Finding]) -> None:
        for name, detector, what in (
            ("magnet_flag", "integrity.tamper_event", "magnetic-field flag came on"),
            ("reverse_flow_flag", "integrity.reverse_flow", "reverse-flow flag came on"),
        ):
            if name not in frame.fields:
                continue
            v = frame.fields[name]
            valid = frame.valid(name)
            for r in self.latch[name].update_rows(frame, valid & (v > 0.5), valid & (v <= 0.5)):
                self._find(
                    out,
                    frame,
                    int(r),
                    detector,
                    score=1.0,
                    threshold=0.5,
                    explanation=f"{what} at {iso(int(frame.ts[r]))}",
                )
        for name, detector, what, only in (
            ("volume_reverse_m3", "integrity.reverse_flow", "backward volume register rose", None),
            (
                "energy_export_kwh",
                "integrity.reverse_energy",
                "export register of an import-only customer rose",
                "import_only",
            ),
        ):
            cont = frame.cont.get(name)
            if cont is None:
                continue
            prev_i = frame.prev_idx(~np.isnan(cont))
            # the first row of a segment compares with the raw last value (offsets cancel)
            prev = np.where(prev_i >= 0, cont[np.maximum(prev_i, 0)], np.nan)
            rose = ~np.isnan(prev) & (cont - prev > 1e-6 * np.maximum(1.0, np.abs(prev)))
            if only == "import_only":
                rose &= ~self.ctx.export_expected[frame.dev]
            key = "reverse_flow" if detector == "integrity.reverse_flow" else "reverse_energy"
            rows = np.flatnonzero(rose)
            # the first row of a segment: compare with the value remembered from the last batch
            first_prev = self.ctx.last.get(name)
            if first_prev is not None and frame.n:
                f = frame.first
                raw = frame.fields[name]
                r0 = f[~np.isnan(raw[f]) & (raw[f] - first_prev[frame.seg_dev] > 1e-6)]
                if only == "import_only":
                    r0 = r0[~self.ctx.export_expected[frame.dev[r0]]]
                rows = np.union1d(rows, r0)
            for r in self.rate[key].first_per_device(frame, rows):
                self._find(
                    out,
                    frame,
                    int(r),
                    detector,
                    score=1.0,
                    threshold=0.0,
                    explanation=f"{what} at {iso(int(frame.ts[r]))} "
                    f"(now {frame.fields[name][r]:g})",
                )

    def _electricity(self, frame: Frame, out: list[Finding]) -> None:
        f = frame.fields
        have = [(u, i) for u, i in PHASES if u in f and i in f]
        if not have:
            return
        ok = frame.ok
        volts = [f[u] for u, _ in have]
        amps = [np.abs(f[i]) for _, i in have]
        # nominal voltage: learned once from the highest phase, snapped to 120/230 V
        if frame.n and np.isnan(self.u_nom[frame.seg_dev]).any():
            vmax = np.fmax.reduce([np.where(ok, v, np.nan) for v in volts])
            seg_v = np.fmax.reduceat(np.nan_to_num(vmax, nan=0.0), frame.first)
            seen = seg_v > 50
            d = frame.seg_dev[seen]
            self.u_nom[d] = np.where(
                np.isnan(self.u_nom[d]), np.where(seg_v[seen] > 175, 230.0, 120.0), self.u_nom[d]
            )
        u_nom = self.u_nom[frame.dev]
        known = ~np.isnan(u_nom) & ok
        # voltage loss under load on any phase
        lim_low, lim_high = 0.78 * u_nom, 0.85 * u_nom
        low_any = np.zeros(frame.n, dtype=bool)
        high_all = np.ones(frame.n, dtype=bool)
        for v, a in zip(volts, amps, strict=True):
            low_any |= (v < lim_low) & (a > 0.05)
            high_all &= (v > lim_high) | np.isnan(v)
        on = known & low_any
        off = known & ~on & high_all
        for r in self.latch["voltage_loss"].update_rows(frame, on, off):
            ph = int(
                np.argmax(
                    [v[r] < lim_low[r] and a[r] > 0.05 for v, a in zip(volts, amps, strict=True)]
                )
            )
            self._find(
                out,
                frame,
                int(r),
                "integrity.voltage_loss",
                score=float(volts[ph][r] / u_nom[r] * 100.0),
                threshold=78.0,
                unit="%",
                explanation=f"phase L{ph + 1} voltage {volts[ph][r]:.1f} V is below 78 % "
                f"of {u_nom[r]:.0f} V while it carries {amps[ph][r]:.2f} A (voltage loss "
                "under load)",
            )
        # current loss: a phase carries nothing while voltage is present and another phase
        # carries load, for a sustained time
        if len(have) == 3:
            zero_any = np.zeros(frame.n, dtype=bool)
            loaded_any = np.zeros(frame.n, dtype=bool)
            for v, a in zip(volts, amps, strict=True):
                zero_any |= (a < 0.025) & (v > 0.7 * u_nom)
                loaded_any |= a > 0.25
            cond = known & zero_any & loaded_any
            clear = known & ~cond
            since = frame.run_since(cond, clear, self.loss_since)
            sustained = cond & (frame.ts - since >= self.current_loss_min_ns)
            for r in self.latch["current_loss"].update_rows(frame, sustained, clear):
                ph = int(np.argmin([a[r] for a in amps]))
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.current_loss",
                    score=float(amps[ph][r]),
                    threshold=0.025,
                    unit="A",
                    start_ns=int(since[r]),
                    explanation=f"phase L{ph + 1} carries {amps[ph][r]:.3f} A at "
                    f"{volts[ph][r]:.0f} V while another phase carries "
                    f"{max(a[r] for a in amps):.1f} A, since {iso(int(since[r]))} (CT bypass?)",
                )
            if frame.n:
                self.loss_since[frame.seg_dev] = since[frame.last]
            self._open_phase(frame, out, volts=volts, amps=amps, u_nom=u_nom, known=known)
        # live/neutral mismatch on single-phase meters
        if "current_n_a" in f and len(have) == 1:
            il, inn = amps[0], np.abs(f["current_n_a"])
            big = np.fmax(il, inn)
            ratio = np.abs(il - inn) / np.where(big > 0, big, 1.0)
            valid = ok & ~np.isnan(il) & ~np.isnan(inn) & (big > 0.5)
            for r in self.latch["neutral_mismatch"].update_rows(
                frame, valid & (ratio > 0.2), valid & (ratio < 0.1)
            ):
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.neutral_mismatch",
                    score=float(ratio[r]),
                    threshold=0.2,
                    explanation=f"live current {il[r]:.2f} A vs neutral {inn[r]:.2f} A "
                    f"differ by {ratio[r] * 100:.0f} % (bypass or earth leak)",
                )

    def _open_phase(
        self,
        frame: Frame,
        out: list[Finding],
        *,
        volts: list[FloatArray],
        amps: list[FloatArray],
        u_nom: FloatArray,
        known: npt.NDArray[np.bool_],
    ) -> None:
        """DL/T 698.45 open phase: U < 60 % and no current on a phase for 60 s, while
        another phase has its voltage (else it is an outage, not a broken phase)."""
        dead_any = np.zeros(frame.n, dtype=bool)
        live_any = np.zeros(frame.n, dtype=bool)
        for v, a in zip(volts, amps, strict=True):
            dead_any |= (v < 0.6 * u_nom) & (a < 0.025)
            live_any |= v > 0.7 * u_nom
        cond = known & dead_any & live_any
        clear = known & ~cond
        since = frame.run_since(cond, clear, self.open_since)
        sustained = cond & (frame.ts - since >= OPEN_PHASE_MIN_NS)
        for r in self.latch["open_phase"].update_rows(frame, sustained, clear):
            ph = int(np.argmin([v[r] for v in volts]))
            self._find(
                out,
                frame,
                int(r),
                "integrity.open_phase",
                score=float(volts[ph][r] / u_nom[r] * 100.0),
                threshold=60.0,
                unit="%",
                start_ns=int(since[r]),
                explanation=f"phase L{ph + 1} reads {volts[ph][r]:.0f} V "
                f"({volts[ph][r] / u_nom[r]:.0%} of {u_nom[r]:.0f} V) and no current while "
                "another phase is live, since "
                f"{iso(int(since[r]))} (a broken or disconnected voltage link: that phase's "
                "energy is not registered)",
            )
        if frame.n:
            self.open_since[frame.seg_dev] = since[frame.last]

    def _power_checks(self, frame: Frame, out: list[Finding]) -> None:
        """Reverse power of an import-only customer; power factor below 0.3 under load."""
        f = frame.fields
        if "power_total_w" in f:
            p = f["power_total_w"]
            valid = frame.valid("power_total_w") & ~self.ctx.export_expected[frame.dev]
            for r in self.latch["reverse_power"].update_rows(
                frame, valid & (p < -50.0), valid & (p > 0.0)
            ):
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.reverse_energy",
                    score=float(-p[r]),
                    threshold=50.0,
                    unit="W",
                    explanation=f"active power {p[r]:.0f} W flows backwards through an "
                    "import-only meter (reversed wiring or bypass)",
                )
        if "power_factor" in f and "power_total_w" in f:
            pf, p = np.abs(f["power_factor"]), np.abs(f["power_total_w"])
            valid = frame.valid("power_factor") & frame.valid("power_total_w")
            cond = valid & (pf < 0.3) & (p > 100.0)
            since = frame.run_since(cond, valid & ~cond, self.pf_since)
            if frame.n:
                self.pf_since[frame.seg_dev] = since[frame.last]
            long = cond & (frame.ts - since >= HOUR_NS)
            for r in self.latch["low_pf"].update_rows(frame, long, valid & (pf > 0.5)):
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.low_power_factor",
                    score=float(pf[r]),
                    threshold=0.3,
                    start_ns=int(since[r]),
                    explanation=f"power factor {pf[r]:.2f} below 0.3 under {p[r]:.0f} W "
                    f"since {iso(int(since[r]))} (tampered voltage or current circuit)",
                )
        if "flow_m3h" in f:
            q = f["flow_m3h"]
            valid = frame.valid("flow_m3h")
            cond = valid & (q > 1e-4)
            if self.ctx.reference is not None:
                cond &= ~self.ctx.reference[frame.dev]  # a district's bulk meter always flows
            since = frame.run_since(cond, valid & ~cond, self.flow_since)
            if frame.n:
                self.flow_since[frame.seg_dev] = since[frame.last]
            long = cond & (frame.ts - since >= 24 * HOUR_NS)
            for r in self.latch["continuous_flow"].update_rows(frame, long, valid & ~cond):
                self._find(
                    out,
                    frame,
                    int(r),
                    "integrity.continuous_flow",
                    score=float(q[r]),
                    threshold=1e-4,
                    unit="m3/h",
                    start_ns=int(since[r]),
                    explanation=f"water has flowed without a pause since {iso(int(since[r]))} "
                    f"(now {q[r]:.4f} m3/h): a leak behind the meter",
                )

    def _energy_without_power(self, frame: Frame, out: list[Finding]) -> None:
        cont = frame.cont.get("energy_import_kwh")
        if cont is None or "power_total_w" not in frame.fields:
            return
        p = frame.fields["power_total_w"]
        valid = ~np.isnan(cont) & ~np.isnan(p)
        pi = frame.prev_idx(valid)
        has = pi >= 0
        j = np.maximum(pi, 0)
        dt_h = (frame.ts - frame.ts[j]) / (HOUR_NS)
        de = cont - cont[j]
        idle = (np.abs(p) < 1.0) & (np.abs(p[j]) < 1.0)
        rows = np.flatnonzero(valid & has & idle & (dt_h <= 1.0) & (de > 0.02))
        for r in self.rate["energy_without_power"].first_per_device(frame, rows):
            self._find(
                out,
                frame,
                int(r),
                "integrity.energy_without_power",
                score=float(de[r]),
                threshold=0.02,
                unit="kWh",
                start_ns=int(frame.ts[j[r]]),
                explanation=f"import register advanced {de[r]:.3f} kWh in "
                f"{dt_h[r] * 60:.0f} min while power read {p[j[r]]:.0f} W and {p[r]:.0f} W",
            )


def continuous(frame: Frame, name: str) -> FloatArray | None:
    """The unwrapped counter column `name` (after `Integrity.process`), if present."""
    return frame.cont.get(name)


def phases_present(frame: Frame) -> npt.NDArray[np.bool_]:
    return np.array([u in frame.fields for u, _ in PHASES])
