"""Gas meter with a volume corrector (PTZ): Vm at measurement, Vb at base conditions.

Consumption follows heating demand (colder hours draw more) on top of a
cooking/hot-water daily profile. The corrector measures gas temperature and
absolute pressure and converts: ``C = (p/pb)·(Tb/T)·(Zb/Z)`` with base
conditions pb = 1.01325 bar, Tb = 273.15 K, and ``Zb/Z ≈ 1 + 0.0021·(p − pb)``
(natural gas at distribution pressures); ``ΔVb = C·ΔVm``.

`gas_wrong_temperature` modes: ``substitute`` (default) converts with a
fixed temperature (`value_c`, 15 degC) while reporting the measured one, so
the reported factor disagrees with the reported temperature; ``drift``,
``offset`` and ``stuck`` are sensor faults: the corrector converts with what
its sensor says, so the factor stays consistent and only the temperature's
plausibility (weather, variance) gives it away.

Parameters: `mean_m3_day` (8), `pressure_bar` (2.0 absolute),
`volume_start_m3` (random).
"""

from __future__ import annotations

import numpy as np

from simulators.models.common import (
    F64,
    DayContext,
    DayOut,
    MeterModel,
    ambient_c,
    bump,
    drift_error,
    of,
    ramp,
    window,
)
from simulators.spec import DeviceSpec, Label

P_BASE_BAR = 1.01325
T_BASE_K = 273.15
Z_SLOPE_PER_BAR = 0.0021


def conversion_factor(pressure_bar: F64, temperature_c: F64) -> F64:
    """``C = (p/pb)·(Tb/T)·(Zb/Z)`` as the corrector computes it."""
    zb_over_z = 1.0 + Z_SLOPE_PER_BAR * (pressure_bar - P_BASE_BAR)
    return np.asarray(
        (pressure_bar / P_BASE_BAR) * (T_BASE_K / (temperature_c + 273.15)) * zb_over_z,
        dtype=np.float64,
    )


class GasModel(MeterModel):
    def _start(self, rng: np.random.Generator) -> None:
        spec = self.spec
        self.vm_m3 = spec.param("volume_start_m3", float(rng.uniform(1_000, 50_000)))
        self.vb_m3 = self.vm_m3 * 1.9
        self.event_counter = float(rng.integers(0, 20))
        self.stuck_temp: float | None = None

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        spec, conds, t = self.spec, self.conditions, ctx.t_rel_s
        n = t.size
        rng = ctx.rng(spec.id, 1)
        ambient = ambient_c(ctx.seed, ctx.day, ctx.start_s, t)
        heating = np.maximum(0.0, 17.0 - ambient) / 10.0
        base = 0.25 + 0.6 * bump(ctx.hour, 7.0, 1.0) + 0.6 * bump(ctx.hour, 19.0, 1.5)
        mean_m3h = spec.param("mean_m3_day", 8.0) / 24.0
        flow = mean_m3h * (base + heating) * rng.lognormal(-0.03, 0.25, n)
        night = (ctx.hour < 5.0) & (rng.random(n) < 0.4)
        flow = np.where(night, flow * 0.2, flow)
        gas_t = 0.5 * ambient + 5.0 + rng.normal(0.0, 0.05, n)  # gas warms in the ground pipe
        p = (
            spec.param("pressure_bar", 2.0)
            + 0.004 * np.sin(2 * np.pi * ctx.hour / 24.0)
            + rng.normal(0.0, 0.002, n)
        )

        t_meas = gas_t.copy()
        t_conv: F64 | None = None  # the temperature the conversion uses, if not t_meas
        for c in of(conds, Label.GAS_WRONG_TEMPERATURE):
            mode = c.text("mode", "substitute")
            w = window(c, t)
            if mode == "substitute":
                # converts with a fixed temperature while reporting the measured one
                t_conv = np.where(w, c.param("value_c", 15.0), gas_t)
            elif mode == "stuck":
                if self.stuck_temp is None and w.any():
                    self.stuck_temp = float(gas_t[np.argmax(w)])
                if self.stuck_temp is not None:
                    t_meas = np.where(w, self.stuck_temp, t_meas)
            elif mode == "offset":
                t_meas = np.where(w, gas_t + (c.magnitude or 5.0), t_meas)
            else:  # drift to `magnitude` degC over ramp_days
                t_meas = t_meas + (c.magnitude or 10.0) * ramp(c, t, default_days=30.0)
        c_meas = conversion_factor(p, t_meas if t_conv is None else t_conv)
        gain = 1.0 + spec.true_error + drift_error(conds, t)
        dvm = flow * gain * ctx.step_s / 3600.0
        for c in of(conds, Label.STUCK_REGISTER):
            dvm = np.where(window(c, t), 0.0, dvm)
        dvb = dvm * c_meas
        vm = self.vm_m3 + np.concatenate(([0.0], np.cumsum(dvm)[:-1]))
        vb = self.vb_m3 + np.concatenate(([0.0], np.cumsum(dvb)[:-1]))
        self.vm_m3 = float(vm[-1] + dvm[-1])
        self.vb_m3 = float(vb[-1] + dvb[-1])
        fields = {
            "volume_unconverted_m3": vm,
            "volume_converted_m3": vb,
            "temperature_c": t_meas,
            "pressure_bar": p,
            "conversion_factor": c_meas,
            "event_counter": np.full(n, self.event_counter),
        }
        true = {
            "t_rel_s": t,
            "step_s": np.array([ctx.step_s]),
            "volume_m3_inc": flow * ctx.step_s / 3600.0,
            "temperature_c": gas_t,
            "volume_converted_true_m3_inc": flow
            * ctx.step_s
            / 3600.0
            * conversion_factor(p, gas_t),
        }
        return DayOut(fields=fields, true=true)
