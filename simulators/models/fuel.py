"""Fuel station: dispenser nozzles with transactions, and the tank they draw from.

Nozzle: customers arrive as a Poisson process whose rate follows the
station's busy and quiet hours (morning and evening rush, quiet nights,
quieter weekends). Volumes mix full-tank fills (lognormal, median ~32 L),
prepaid round amounts (volume = amount / price, the dispenser stops at the
preset) and small cans. Flow rates are 30-50 L/min around the nozzle's own
nominal rate. A nozzle serves one customer at a time. The measured volume is
the true volume times (1 + error), where the error is the nozzle's
`true_error` plus drift and any over-registration active at the start of the
transaction. Displays round to 0.01 L and 0.01 currency; the electronic
totalizers add the measured volumes and amounts. Volumes are at product
temperature (dispensers without temperature compensation).

Tank gauge: the product's net (15 degC) stock falls with the nozzles' true
deliveries converted to 15 degC, rises with road-tanker deliveries (ordered
when the stock runs low, delivered in the morning at the day's ambient
temperature) and falls with any leak. The product temperature relaxes to the
ground temperature and jumps when a warmer delivery mixes in. The gauge
measures product and water level in a horizontal cylinder with millimetre
noise and the temperature with 0.05 degC noise, and computes gross and net
volume from them, as an automatic tank gauge does.

Intermittent over-registration (a pulse-adding chip) adds `magnitude` on a
`fraction` of transactions; with `on_days`/`off_days` it is switched on and
off in cycles.

Nozzle parameters: `rate_per_h` (3), `flow_lpm` (36-44), `price` (1.75),
`grade` ("diesel"), `k_factor` (100 pulses/L), `totalizer_start_l` (random).
Tank parameters: `capacity_l` (30000), `diameter_mm` (2500),
`expansion_per_c` (0.00095), `fill_start` (0.6), `reorder_fraction` (0.35),
`water_mm` (8), `ground_temp_c` (12).
"""

from __future__ import annotations

import numpy as np

from simulators.models.common import (
    F64,
    DayContext,
    DayOut,
    ambient_c,
    drift_error,
    of,
    rng_for,
    window,
)
from simulators.spec import DAY_S, Condition, DeviceSpec, Label

_STATION_SHAPE = np.array(
    [
        0.15,
        0.1,
        0.08,
        0.08,
        0.15,
        0.4,
        0.9,
        1.7,
        1.8,
        1.3,
        1.0,
        1.0,
        1.1,
        1.1,
        1.0,
        1.1,
        1.5,
        1.7,
        1.6,
        1.2,
        0.9,
        0.6,
        0.4,
        0.25,
    ]
)
_STATION_SHAPE = _STATION_SHAPE / _STATION_SHAPE.mean()
_COMPLETE_HOLD_S = 120.0  # a finished transaction shows state 2 until paid
_PREPAID = np.array([10.0, 20.0, 20.0, 30.0, 40.0, 50.0, 50.0, 60.0, 80.0, 100.0])


def unit_price(seed: int, grade: str, base: float, day_abs: int) -> float:
    """The grade's price on absolute day `day_abs` (weekly small changes, 3 decimals)."""
    week = day_abs // 7
    rng = rng_for(seed, f"site:price:{grade}", week)
    change = rng.normal(0.0, 0.015)
    return round(base * (1.0 + change), 3)


class NozzleModel:
    def __init__(
        self, spec: DeviceSpec, conditions: tuple[Condition, ...], *, seed: int, **_: object
    ) -> None:
        self.spec = spec
        self.conditions = conditions
        self.seed = seed
        rng = rng_for(seed, spec.id, -1)
        self.totalizer_l = spec.param("totalizer_start_l", float(rng.uniform(2e5, 2e6)))
        self.totalizer_amount = self.totalizer_l * spec.param("price", 1.75)
        self.counter = float(rng.integers(10_000, 200_000))
        self.offset_l = 0.0
        self.offset_amount = 0.0
        self.k_factor = spec.param("k_factor", 100.0)
        self.param_counter = float(rng.integers(1, 6))
        self.flow_nominal = spec.param("flow_lpm", float(rng.uniform(36.0, 44.0)))
        self.display = (0.0, 0.0)  # last (volume, amount)
        self.applied: set[int] = set()

    def _transactions(self, ctx: DayContext, price: float) -> tuple[F64, F64, F64, F64, F64]:
        """(start, end, true volume, measured volume, measured flow) of the day's sales."""
        rng = ctx.rng(self.spec.id, 1)
        rate = self.spec.param("rate_per_h", 3.0) * (0.85 if ctx.weekday >= 5 else 1.0)
        n = int(rng.poisson(rate * 24.0))
        hours = rng.choice(24, size=n, p=_STATION_SHAPE / _STATION_SHAPE.sum())
        arrivals = np.sort(hours * 3600.0 + rng.uniform(0.0, 3600.0, n))
        kind = rng.random(n)
        fill = np.clip(rng.lognormal(np.log(32.0), 0.45, n), 3.0, 95.0)
        can = rng.uniform(2.0, 10.0, n)
        prepaid_amount = rng.choice(_PREPAID, size=n)
        flow = np.clip(self.flow_nominal * rng.normal(1.0, 0.06, n), 30.0, 50.0)
        flow = np.where(kind >= 0.9, np.maximum(flow * 0.8, 25.0), flow)
        gaps = rng.uniform(20.0, 60.0, n)
        chip = rng.random(n)
        t0 = ctx.day_start_rel_s
        # The per-transaction error, set when the customer arrives.
        start = t0 + arrivals
        gain = np.full(n, 1.0 + self.spec.true_error)
        gain = gain + drift_error(self.conditions, start)
        for c in of(self.conditions, Label.OVER_REGISTRATION, Label.CALIBRATION_CHANGE):
            gain = gain + np.where(window(c, start), c.magnitude or 0.0, 0.0)
        for c in of(self.conditions, Label.INTERMITTENT_OVER_REGISTRATION):
            on = window(c, start) & (chip < c.param("fraction", 0.3))
            on_days, off_days = c.param("on_days", 0.0), c.param("off_days", 0.0)
            if on_days > 0 and off_days > 0:  # switched on and off remotely, in cycles
                phase = ((start - c.start_s) / DAY_S) % (on_days + off_days)
                on &= phase < on_days
            gain = gain + np.where(on, c.magnitude or 0.02, 0.0)
        measured = np.where(
            kind < 0.65,
            np.round(fill * gain, 2),
            np.where(kind < 0.9, np.round(prepaid_amount / price, 2), np.round(can * gain, 2)),
        )
        true_vol = np.where(kind < 0.65, fill, np.where(kind < 0.9, measured / gain, can))
        duration = true_vol / flow * 60.0
        end = np.empty(n)
        # One customer at a time: a queue, so a plain loop (over Python floats: fast).
        starts: list[float] = []
        ends: list[float] = []
        prev_end = t0 - 1e9
        for arr, gap, dur in zip(arrivals.tolist(), gaps.tolist(), duration.tolist(), strict=True):
            begin = max(t0 + arr, prev_end + gap)
            starts.append(begin)
            prev_end = begin + dur
            ends.append(prev_end)
        start = np.array(starts, dtype=np.float64)
        end = np.array(ends, dtype=np.float64)
        keep = end < t0 + DAY_S - 30.0
        return start[keep], end[keep], true_vol[keep], measured[keep], (flow * gain)[keep]

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        spec, t = self.spec, ctx.t_rel_s
        n = t.size
        base_price = spec.param("price", 1.75)
        day_abs = int((ctx.start_s + ctx.day_start_rel_s) // DAY_S)
        price = unit_price(ctx.seed, spec.text("grade", "diesel"), base_price, day_abs)
        start, end, true_vol, meas, meas_flow = self._transactions(ctx, price)
        m = start.size
        rng = ctx.rng(spec.id, 2)
        amount = np.round(meas * price, 2)
        visible = np.ones(m, dtype=bool)
        reported = meas.copy()
        for c in of(self.conditions, Label.TRANSACTION_MISMATCH):
            hit = window(c, start) & (rng.random(m) < c.param("fraction", 0.2))
            if c.text("mode", "under_reported") == "unrecorded":
                visible &= ~hit
            else:
                reported = np.where(
                    hit, np.round(meas * (1.0 - (c.magnitude or 0.05)), 2), reported
                )
        rep_amount = np.round(reported * price, 2)

        # Totalizers (all dispensing, recorded or not).
        cum_before = np.concatenate(([0.0], np.cumsum(meas)[:-1])) if m else np.zeros(0)
        amt_before = np.concatenate(([0.0], np.cumsum(amount)[:-1])) if m else np.zeros(0)
        j = np.searchsorted(start, t, side="right") - 1
        has = j >= 0
        jj = np.where(has, j, 0)
        if m:
            frac = np.clip((t - start[jj]) / np.maximum(end[jj] - start[jj], 1e-9), 0.0, 1.0)
            tot = np.where(has, cum_before[jj] + meas[jj] * frac, 0.0)
            tot_amt = np.where(has, amt_before[jj] + amount[jj] * frac, 0.0)
        else:
            frac = np.zeros(n)
            tot = np.zeros(n)
            tot_amt = np.zeros(n)
        tot = self.totalizer_l + tot
        tot_amt = self.totalizer_amount + tot_amt
        self.totalizer_l += float(meas.sum())
        self.totalizer_amount += float(amount.sum())

        # Display and counters (recorded transactions only).
        vs, ve = start[visible], end[visible]
        vrep, vamt, vflow = reported[visible], rep_amount[visible], meas_flow[visible]
        jv = np.searchsorted(vs, t, side="right") - 1
        hv = jv >= 0
        jvv = np.where(hv, jv, 0)
        if vs.size:
            in_prog = hv & (t < ve[jvv])
            fv = np.clip((t - vs[jvv]) / np.maximum(ve[jvv] - vs[jvv], 1e-9), 0.0, 1.0)
            tx_vol = np.where(
                hv, np.where(in_prog, np.round(vrep[jvv] * fv, 2), vrep[jvv]), self.display[0]
            )
            tx_amt = np.where(
                hv, np.where(in_prog, np.round(vamt[jvv] * fv, 2), vamt[jvv]), self.display[1]
            )
            completed = np.searchsorted(np.sort(ve), t, side="right").astype(np.float64)
            recent = hv & ~in_prog & (t - ve[jvv] < _COMPLETE_HOLD_S)
            state = np.where(in_prog, 1.0, np.where(recent, 2.0, 0.0))
            flow_now = np.where(in_prog, vflow[jvv], 0.0)
            self.display = (float(vrep[-1]), float(vamt[-1]))
        else:
            tx_vol = np.full(n, self.display[0])
            tx_amt = np.full(n, self.display[1])
            completed = np.zeros(n)
            state = np.zeros(n)
            flow_now = np.zeros(n)
        counter = self.counter + completed
        self.counter += float(vs.size)

        # Tampering with registers and parameters.
        k = np.full(n, self.k_factor)
        pcount = np.full(n, self.param_counter)
        off_l = np.full(n, self.offset_l)
        off_amt = np.full(n, self.offset_amount)
        for idx, c in enumerate(self.conditions):
            w = window(c, t)
            if c.label is Label.CALIBRATION_CHANGE:
                k = np.where(w, self.k_factor / (1.0 + (c.magnitude or 0.0)), k)
                if c.param("audited", 1.0):
                    pcount = np.where(w, self.param_counter + 1.0, pcount)
            elif c.label is Label.TOTALIZER_ROLLBACK and idx not in self.applied and w.any():
                first = int(np.argmax(w))
                if c.text("mode", "rollback") == "reset":
                    d_l = float(tot[first] + off_l[first])
                    d_amt = float(tot_amt[first] + off_amt[first])
                else:
                    d_l = c.magnitude or 5000.0
                    d_amt = d_l * price
                off_l[first:] -= d_l
                off_amt[first:] -= d_amt
                self.offset_l -= d_l
                self.offset_amount -= d_amt
                self.applied.add(idx)
        tot = tot + off_l
        tot_amt = tot_amt + off_amt
        fields = {
            "totalizer_volume_l": tot,
            "totalizer_amount": tot_amt,
            "transaction_volume_l": tx_vol,
            "transaction_amount": tx_amt,
            "unit_price": np.full(n, price),
            "transaction_counter": counter,
            "state": state,
            "flow_rate_lpm": flow_now,
            "calibration_k_factor": k,
            "parameter_change_counter": pcount,
        }
        events = {
            "start_s": start,
            "end_s": end,
            "true_volume_l": true_vol,
            "measured_volume_l": meas,
            "reported_volume_l": reported,
            "visible": visible.astype(np.float64),
        }
        return DayOut(fields=fields, true={"t_rel_s": t}, events=events)


class TankGeometry:
    """A horizontal cylinder: volume from level and level from volume."""

    def __init__(self, capacity_l: float, diameter_mm: float) -> None:
        self.radius_mm = diameter_mm / 2.0
        r_dm = self.radius_mm / 100.0
        self.length_dm = capacity_l / (np.pi * r_dm * r_dm)
        self.capacity_l = capacity_l
        self._h = np.linspace(0.0, diameter_mm, 4001)
        self._v = self.volume_l(self._h)

    def volume_l(self, level_mm: F64) -> F64:
        r = self.radius_mm / 100.0
        h = np.clip(level_mm, 0.0, 2 * self.radius_mm) / 100.0
        area = r * r * np.arccos((r - h) / r) - (r - h) * np.sqrt(np.maximum(2 * r * h - h * h, 0))
        return np.asarray(area * self.length_dm, dtype=np.float64)

    def level_mm(self, volume_l: F64) -> F64:
        return np.asarray(np.interp(volume_l, self._v, self._h), dtype=np.float64)


TANK_DELIVERY_S = 40 * 60.0
VCF_REF_C = 15.0


class TankModel:
    def __init__(
        self, spec: DeviceSpec, conditions: tuple[Condition, ...], *, seed: int, **_: object
    ) -> None:
        self.spec = spec
        self.conditions = conditions
        self.seed = seed
        self.geometry = TankGeometry(
            spec.param("capacity_l", 30_000.0), spec.param("diameter_mm", 2_500.0)
        )
        self.beta = spec.param("expansion_per_c", 0.00095)
        self.stock_net_l = spec.param("fill_start", 0.6) * self.geometry.capacity_l
        self.temp_c = spec.param("ground_temp_c", 12.0)
        self.deliveries_l = spec.param("deliveries_start_l", 0.0)
        self.leaked_l = 0.0

    def _temperature(self, t: F64, t0: float, temp0: float, ground: float) -> F64:
        tau_s = 4.0 * DAY_S
        return np.asarray(ground + (temp0 - ground) * np.exp(-(t - t0) / tau_s), dtype=np.float64)

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        spec, t = self.spec, ctx.t_rel_s
        n = t.size
        rng = ctx.rng(spec.id, 1)
        t0 = ctx.day_start_rel_s
        ground = self.spec.param("ground_temp_c", 12.0) + 3.0 * np.sin(
            2 * np.pi * (ctx.day_of_year - 110.0) / 365.25
        )
        tx = [out.events for _s, out in members if out.events]
        s_start = np.concatenate([e["start_s"] for e in tx]) if tx else np.zeros(0)
        s_end = np.concatenate([e["end_s"] for e in tx]) if tx else np.zeros(0)
        s_gross = np.concatenate([e["true_volume_l"] for e in tx]) if tx else np.zeros(0)

        # Leak (net litres lost per hour), as a function of time.
        def leaked(at: F64) -> F64:
            out = np.zeros_like(at)
            for c in of(self.conditions, Label.TANK_LEAK):
                end = np.inf if c.end_s is None else c.end_s
                lo = max(c.start_s, t0)
                out += (c.magnitude or 2.0) / 3600.0 * np.clip(np.minimum(at, end) - lo, 0.0, None)
            return out

        # Order a delivery when the day's sales would take the stock below the reorder line.
        approx_net = s_gross.sum()
        reorder = spec.param("reorder_fraction", 0.35) * self.geometry.capacity_l
        t_del = np.inf
        vol_del = 0.0
        temp_del = 0.0
        if self.stock_net_l - 1.3 * approx_net < reorder:
            t_del = t0 + 7 * 3600.0 + float(rng.uniform(0.0, 2 * 3600.0))
            pre = self._temperature(s_start, t0, self.temp_c, ground)
            sold_before = float(
                (s_gross / (1.0 + self.beta * (pre - VCF_REF_C)) * (s_start < t_del)).sum()
            )
            stock_then = self.stock_net_l - sold_before - float(leaked(np.array([t_del]))[0])
            vol_del = max(
                0.0, np.floor((0.9 * self.geometry.capacity_l - stock_then) / 500.0) * 500.0
            )
            temp_del = float(ambient_c(ctx.seed, ctx.day, ctx.start_s, np.array([t_del]))[0]) + 3.0
            temp_del = float(np.clip(temp_del, 2.0, 30.0))

        def temperature(at: F64) -> F64:
            before = self._temperature(at, t0, self.temp_c, ground)
            if not np.isfinite(t_del) or vol_del <= 0:
                return before
            t_at_del = float(self._temperature(np.array([t_del]), t0, self.temp_c, ground)[0])
            stock_at = max(self.stock_net_l - float(s_gross[s_start < t_del].sum()), 1.0)
            mixed = (stock_at * t_at_del + vol_del * temp_del) / (stock_at + vol_del)
            after = self._temperature(at, t_del, mixed, ground)
            return np.where(at < t_del, before, after)

        # Net volume of each sale, at the product temperature when it was drawn.
        mid = 0.5 * (s_start + s_end)
        s_net = s_gross / (1.0 + self.beta * (temperature(mid) - VCF_REF_C))

        def sold_net(at: F64) -> F64:
            if s_net.size == 0:
                return np.zeros_like(at)
            frac = np.clip(
                (at[:, None] - s_start[None, :]) / np.maximum(s_end - s_start, 1e-9)[None, :],
                0.0,
                1.0,
            )
            return np.asarray(frac @ s_net, dtype=np.float64)

        def delivered(at: F64) -> F64:
            if vol_del <= 0:
                return np.zeros_like(at)
            return np.asarray(vol_del * np.clip((at - t_del) / TANK_DELIVERY_S, 0.0, 1.0))

        stock = self.stock_net_l + delivered(t) - sold_net(t) - leaked(t)
        temp = temperature(t)
        gross = stock * (1.0 + self.beta * (temp - VCF_REF_C))
        water_mm = spec.param("water_mm", 8.0)
        geo = self.geometry
        level = geo.level_mm(gross + geo.volume_l(np.array([water_mm]))[0])
        # What the gauge measures and computes.
        level_meas: F64 = np.round(level + rng.normal(0.0, 0.1, n), 2)
        water_meas = np.round(np.maximum(rng.normal(water_mm, 0.1, n), 0.0), 2).astype(np.float64)
        temp_meas = np.round(temp + rng.normal(0.0, 0.02, n), 3)
        gross_meas = geo.volume_l(level_meas) - geo.volume_l(water_meas)
        net_meas = gross_meas / (1.0 + self.beta * (temp_meas - VCF_REF_C))
        deliveries = self.deliveries_l + np.where(t >= t_del + TANK_DELIVERY_S, vol_del, 0.0)

        end_t = np.array([t0 + DAY_S])
        self.stock_net_l = float(
            (self.stock_net_l + delivered(end_t) - sold_net(end_t) - leaked(end_t))[0]
        )
        self.temp_c = float(temperature(end_t)[0])
        self.deliveries_l += vol_del
        fields: dict[str, F64] = {
            "gross_volume_l": np.round(gross_meas, 1),
            "net_volume_l": np.round(net_meas, 1),
            "product_level_mm": level_meas,
            "water_level_mm": water_meas,
            "temperature_c": temp_meas,
            "deliveries_net_l": deliveries,
        }
        true = {
            "t_rel_s": t,
            "stock_net_l": stock,
            "temperature_c": temp,
            "sold_net_l": sold_net(t),
            "leaked_l": leaked(t),
        }
        return DayOut(fields=fields, true=true)
