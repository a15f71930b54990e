"""Water meters: household (or commercial) meters, district bulk meters and check meters.

Household flow follows a daily profile with morning and evening peaks and a
night minimum near zero (most night intervals have no flow at all). A bulk
meter sees its district members' true flow plus unmetered leakage (the
group's `technical_loss_pct` of the district, as a steady night flow); a
check meter sees its member's true flow. Forward and reverse registers
integrate the measured flow; status flags follow the meter's own logic
(reverse flow, magnetic field, continuous flow for 24 h = leak).

Parameters: `mean_m3_day` (0.35), `profile` (household|commercial),
`volume_start_m3` (random), `leak_m3h` (0: a continuous leak behind the meter).
"""

from __future__ import annotations

import numpy as np

from simulators.models.common import (
    F64,
    DayContext,
    DayOut,
    MeterModel,
    bump,
    drift_error,
    of,
    window,
)
from simulators.spec import DeviceSpec, Label

REVERSE_BIT, MAGNET_BIT, LEAK_BIT = 1, 2, 4


def water_shape(hour: F64, *, profile: str) -> F64:
    """Relative flow (mean about 1 over a day)."""
    if profile == "commercial":
        on = 1.0 / (1.0 + np.exp(-(hour - 7.5) * 3)) / (1.0 + np.exp((hour - 18.5) * 3))
        return np.asarray((0.05 + 2.1 * on) / 0.96, dtype=np.float64)
    shape = (
        0.03
        + 1.6 * bump(hour, 7.3, 1.1)
        + 1.2 * bump(hour, 19.5, 2.0)
        + 0.4 * bump(hour, 12.5, 2.0)
    )
    return np.asarray(shape / 0.9, dtype=np.float64)


class WaterModel(MeterModel):
    def _start(self, rng: np.random.Generator) -> None:
        spec = self.spec
        self.forward_m3 = spec.param("volume_start_m3", float(rng.uniform(50, 3000)))
        self.reverse_m3 = spec.param("reverse_start_m3", float(rng.uniform(0, 0.5)))
        self.samples_since_zero = 0
        self.leak_mean_m3h = 0.0

    def _true_flow(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> F64:
        t = ctx.t_rel_s
        if self.role in ("bulk", "check") and members:
            flow = np.zeros_like(t)
            for _spec, out in members:
                # Volume-preserving resampling: interpolate cumulative true volume.
                cum_t = np.append(
                    out.true["t_rel_s"], out.true["t_rel_s"][-1] + out.true["step_s"][0]
                )
                cum_v = np.concatenate(([0.0], np.cumsum(out.true["volume_m3_inc"])))
                edges = np.append(t, t[-1] + ctx.step_s)
                vol = np.diff(np.interp(edges, cum_t, cum_v))
                flow += vol / (ctx.step_s / 3600.0)
            if self.role == "bulk":
                ratio = self.loss_pct / 100.0 / max(1e-9, 1.0 - self.loss_pct / 100.0)
                if self.leak_mean_m3h == 0.0:
                    self.leak_mean_m3h = ratio * float(flow.mean())
                rng = ctx.rng(self.spec.id, 3)
                flow = flow + self.leak_mean_m3h * (1.0 + rng.normal(0.0, 0.05, t.size))
            return flow
        rng = ctx.rng(self.spec.id, 1)
        mean_m3h = self.spec.param("mean_m3_day", 0.35) / 24.0
        shape = water_shape(ctx.hour, profile=self.spec.text("profile", "household"))
        day_factor = rng.lognormal(0.0, 0.15)
        flow = mean_m3h * shape * day_factor * rng.lognormal(-0.08, 0.4, t.size)
        # Most night intervals see no draw at all.
        idle = (shape < 0.3) & (rng.random(t.size) < 0.75)
        flow = np.where(idle, 0.0, flow)
        return np.asarray(flow + self.spec.param("leak_m3h", 0.0), dtype=np.float64)

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        spec, conds, t = self.spec, self.conditions, ctx.t_rel_s
        n = t.size
        rng = ctx.rng(spec.id, 2)
        true_flow = self._true_flow(ctx, members)
        gain = 1.0 + spec.true_error + drift_error(conds, t)
        meas = true_flow * gain
        reverse = np.zeros(n, dtype=bool)
        magnet = np.zeros(n, dtype=bool)
        for c in of(conds, Label.REVERSE_FLOW):
            frac = c.magnitude if c.magnitude is not None else 1.0
            hit = window(c, t) & (rng.random(n) < frac) & (true_flow > 0)
            reverse |= hit
        for c in of(conds, Label.MAGNET_CONSUMPTION_DROP):
            w = window(c, t)
            meas = np.where(
                w, meas * (1.0 - (c.magnitude if c.magnitude is not None else 0.95)), meas
            )
            if c.param("flagged", 0.0):
                magnet |= w
        for c in of(conds, Label.STUCK_REGISTER):
            meas = np.where(window(c, t), 0.0, meas)
        flow_reading = np.where(reverse, -meas, meas)
        dt_h = ctx.step_s / 3600.0
        fwd_inc = np.where(reverse, 0.0, meas) * dt_h
        rev_inc = np.where(reverse, meas, 0.0) * dt_h
        fwd = self.forward_m3 + np.concatenate(([0.0], np.cumsum(fwd_inc)[:-1]))
        rev = self.reverse_m3 + np.concatenate(([0.0], np.cumsum(rev_inc)[:-1]))
        self.forward_m3 = float(fwd[-1] + fwd_inc[-1])
        self.reverse_m3 = float(rev[-1] + rev_inc[-1])
        # Leak flag: no interval without flow for the last 24 h.
        zero = meas <= 0.0
        per_day = round(86_400 / ctx.step_s)
        idx = np.arange(n)
        last_zero = np.maximum.accumulate(np.where(zero, idx, -1 - self.samples_since_zero))
        since = idx - last_zero
        leak = since >= per_day
        self.samples_since_zero = int(since[-1])
        status = (
            reverse.astype(np.float64) * REVERSE_BIT
            + magnet.astype(np.float64) * MAGNET_BIT
            + leak.astype(np.float64) * LEAK_BIT
        )
        fields = {
            "volume_forward_m3": fwd,
            "volume_reverse_m3": rev,
            "flow_m3h": flow_reading,
            "status_bits": status,
            "reverse_flow_flag": reverse.astype(np.float64),
            "magnet_flag": magnet.astype(np.float64),
            "leak_flag": leak.astype(np.float64),
        }
        true = {
            "t_rel_s": t,
            "step_s": np.array([ctx.step_s]),
            "volume_m3_inc": true_flow * dt_h,
        }
        return DayOut(fields=fields, true=true)
