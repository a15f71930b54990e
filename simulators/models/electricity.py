"""Three-phase electricity meter (customer, feeder head meter or check meter).

The load follows a daily profile (residential: morning and evening peaks;
commercial: working hours, quieter weekends) with day-to-day and
minute-to-minute variation, split unevenly over the phases. Voltages follow
the shared grid; currents follow from power, voltage and power factor; the
neutral current is the phasor sum of the phase currents. Energy registers
integrate the measured total power over each sample interval.

A reference meter (feeder) sees the sum of its members' true phase powers
plus a technical loss (a no-load part and a part growing with load squared);
a check meter sees its member's true load. Every meter applies its own
`true_error` (plus any `slow_drift`) to power and registers alike, so the
error only shows against a reference.

Parameters (`DeviceSpec.params`): `mean_kw` (3), `profile`
(residential|commercial), `pf` (0.95), `voltage_v` (230), `basic_current_a`
(10), `energy_start_kwh` (random), `phase_shares` ("0.4,0.33,0.27").
"""

from __future__ import annotations

import numpy as np

from simulators.models.common import (
    F64,
    DayContext,
    DayOut,
    MeterModel,
    ar1,
    bump,
    drift_error,
    grid_at,
    of,
    window,
)
from simulators.spec import DeviceSpec, Label

PHASES = (1, 2, 3)
_ANGLES = np.deg2rad(np.array([0.0, -120.0, 120.0]))


def load_shape(hour: F64, *, profile: str, weekday: int) -> F64:
    """Relative load (mean about 1 over a day) at each hour of day."""
    if profile == "commercial":
        on = 1.0 / (1.0 + np.exp(-(hour - 7.5) * 3)) * 1.0 / (1.0 + np.exp((hour - 18.5) * 3))
        level = 0.25 + (1.6 if weekday < 5 else 0.5) * on
        return np.asarray(level / 0.9, dtype=np.float64)
    shape = (
        0.35
        + 0.55 * bump(hour, 7.5, 1.0)
        + 1.1 * bump(hour, 19.5, 1.8)
        + 0.2 * bump(hour, 13.0, 2.0)
    )
    return np.asarray(shape / 0.74, dtype=np.float64)


class ElectricityModel(MeterModel):
    def _start(self, rng: np.random.Generator) -> None:
        spec = self.spec
        self.import_kwh = spec.param("energy_start_kwh", float(rng.uniform(1_000, 40_000)))
        self.export_kwh = spec.param("energy_export_start_kwh", 0.0)
        self.magnet_events = 0.0
        self.cover_events = 0.0
        self.event_counter = spec.param("event_counter_start", float(rng.integers(0, 5)))
        shares = spec.text("phase_shares", "")
        if shares:
            parts = np.array([float(x) for x in shares.split(",")], dtype=np.float64)
        else:
            parts = rng.dirichlet([12.0, 12.0, 12.0])
        self.shares = parts / parts.sum()
        self.pf_base = spec.param("pf", float(rng.uniform(0.9, 0.98)))

    # --- the true load ---------------------------------------------------------------

    def _true_load(
        self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]
    ) -> tuple[F64, F64]:
        """True phase powers (3, n) in W and power factors (3, n)."""
        n = ctx.t_rel_s.size
        if self.role in ("feeder", "check") and members:
            p = np.zeros((3, n))
            pq = np.zeros((3, n))
            for _spec, out in members:
                src_t = out.true["t_rel_s"]
                for k in range(3):
                    pk = np.interp(ctx.t_rel_s, src_t, out.true[f"p_l{k + 1}_w"])
                    pfk = np.interp(ctx.t_rel_s, src_t, out.true[f"pf_l{k + 1}"])
                    p[k] += pk
                    pq[k] += pk * np.tan(np.arccos(np.clip(pfk, 0.05, 1.0)))
            if self.role == "feeder":
                total = p.sum(axis=0)
                ratio = self.loss_pct / 100.0 / max(1e-9, 1.0 - self.loss_pct / 100.0)
                mean_p = float(total.mean()) if total.size else 0.0
                mean_p2 = float((total**2).mean()) if total.size else 1.0
                a = 0.3 * ratio * mean_p
                b = 0.7 * ratio * mean_p / max(mean_p2, 1e-9)
                loss = a + b * total**2
                weights = p / np.maximum(total, 1e-9)
                p = p + weights * loss
            pf = p / np.maximum(np.hypot(p, pq), 1e-9)
            return p, np.clip(pf, 0.05, 1.0)
        rng = ctx.rng(self.spec.id, 1)
        mean_w = self.spec.param("mean_kw", 3.0) * 1000.0
        shape = load_shape(
            ctx.hour, profile=self.spec.text("profile", "residential"), weekday=ctx.weekday
        )
        day_factor = float(rng.lognormal(0.0, 0.12))
        common = np.exp(ar1(rng, n, phi=0.7, sigma=0.18))
        p = np.empty((3, n))
        pf = np.empty((3, n))
        for k in range(3):
            own = np.exp(ar1(rng, n, phi=0.6, sigma=0.12))
            p[k] = np.maximum(mean_w * shape * day_factor * common * own * self.shares[k], 15.0)
            pf[k] = np.clip(self.pf_base + ar1(rng, n, phi=0.8, sigma=0.015), 0.5, 1.0)
        return p, pf

    # --- one day ---------------------------------------------------------------------

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        spec, conds, t = self.spec, self.conditions, ctx.t_rel_s
        n = t.size
        rng = ctx.rng(spec.id, 2)
        p_true, pf = self._true_load(ctx, members)
        freq, v_common = grid_at(ctx.seed, ctx.day, t)
        nominal = spec.param("voltage_v", 230.0)
        total_true = p_true.sum(axis=0)
        u = np.empty((3, n))
        for k in range(3):
            sag = 2.5 * total_true / max(float(total_true.max()), 1.0)
            uplift = 1.5 if self.role == "feeder" else 0.0
            u[k] = nominal + 1.0 + uplift + v_common - sag + rng.normal(0.0, 0.4, n)
        i_true = p_true / (u * pf)
        phasors = i_true * np.exp(1j * (_ANGLES[:, None] - np.arccos(pf)))
        i_n = np.abs(phasors.sum(axis=0)) + np.abs(rng.normal(0.0, 0.02, n))

        # What the meter measures: its error, drift and tampering.
        gain = 1.0 + spec.true_error + drift_error(conds, t)
        u_meas = u.copy()
        i_meas = i_true * gain
        sign = np.ones((3, n))
        reg_factor = np.ones(n)
        for c in of(conds, Label.CT_BYPASS):
            k = int(c.param("phase", 1)) - 1
            i_meas[k] *= np.where(window(c, t), 1.0 - (c.magnitude or 0.9), 1.0)
        for c in of(conds, Label.VOLTAGE_LOSS):
            k = int(c.param("phase", 1)) - 1
            u_meas[k] = np.where(window(c, t), u[k] * (c.magnitude or 0.1), u_meas[k])
        for c in of(conds, Label.REVERSE_ENERGY):
            phases = [int(x) for x in c.text("phases", "1,2,3").split(",")]
            for ph in phases:
                sign[ph - 1] = np.where(window(c, t), -1.0, sign[ph - 1])
        for c in of(conds, Label.MAGNET_EVENT):
            if c.magnitude:
                i_meas *= np.where(window(c, t), 1.0 - c.magnitude, 1.0)
        for c in of(conds, Label.REGISTER_SLOWED):
            reg_factor *= np.where(window(c, t), 1.0 - (c.magnitude or 0.3), 1.0)
        # Measured power from measured voltage and current (a voltage-loss meter
        # multiplies by the wrong voltage; a bypassed CT sees less current).
        p_meas = sign * u_meas * i_meas * pf
        total_meas = p_meas.sum(axis=0)

        dt_h = ctx.step_s / 3600.0
        imp_inc = np.maximum(total_meas, 0.0) * dt_h / 1000.0 * reg_factor
        exp_inc = np.maximum(-total_meas, 0.0) * dt_h / 1000.0 * reg_factor
        for c in of(conds, Label.STUCK_REGISTER):
            stuck = window(c, t)
            imp_inc = np.where(stuck, 0.0, imp_inc)
            exp_inc = np.where(stuck, 0.0, exp_inc)
        # Register at sample k = energy up to t_k (increments of earlier intervals).
        imp = self.import_kwh + np.concatenate(([0.0], np.cumsum(imp_inc)[:-1]))
        exp = self.export_kwh + np.concatenate(([0.0], np.cumsum(exp_inc)[:-1]))
        self.import_kwh = float(imp[-1] + imp_inc[-1])
        self.export_kwh = float(exp[-1] + exp_inc[-1])

        magnet = np.full(n, self.magnet_events)
        cover = np.full(n, self.cover_events)
        for c in of(conds, Label.MAGNET_EVENT, Label.COVER_EVENT):
            count = int(c.param("count", 1))
            ticks = c.start_s + np.arange(count) * c.param("interval_days", 1.0) * 86_400
            ticks = ticks[(ticks >= t[0]) & (ticks < t[-1] + ctx.step_s)]
            steps = np.searchsorted(ticks, t, side="right").astype(np.float64)
            if c.label is Label.MAGNET_EVENT:
                magnet += steps
            else:
                cover += steps
        self.magnet_events = float(magnet[-1])
        self.cover_events = float(cover[-1])
        s_meas = np.abs(u_meas * i_meas).sum(axis=0)
        fields = {
            "voltage_l1_v": u_meas[0],
            "voltage_l2_v": u_meas[1],
            "voltage_l3_v": u_meas[2],
            "current_l1_a": i_meas[0],
            "current_l2_a": i_meas[1],
            "current_l3_a": i_meas[2],
            "current_n_a": i_n * gain,
            "power_l1_w": p_meas[0],
            "power_l2_w": p_meas[1],
            "power_l3_w": p_meas[2],
            "power_total_w": total_meas,
            "power_factor": np.clip(np.abs(total_meas) / np.maximum(s_meas, 1e-9), 0.0, 1.0),
            "frequency_hz": freq,
            "energy_import_kwh": imp,
            "energy_export_kwh": exp,
            "magnet_events": magnet,
            "cover_events": cover,
            "event_counter": np.full(n, self.event_counter),
        }
        true = {"t_rel_s": t, "energy_kwh_inc": total_true * dt_h / 1000.0}
        for k in range(3):
            true[f"p_l{k + 1}_w"] = p_true[k]
            true[f"pf_l{k + 1}"] = pf[k]
        return DayOut(fields=fields, true=true)
