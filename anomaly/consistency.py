"""Consistency detectors: a device's own registers must agree with each other.

Per reading:
- `consistency.amount_price_volume`: a completed transaction's amount must
  equal unit price × volume within display rounding (0.01 L, 0.01 currency).
- `consistency.totalizer_transaction`: across exactly one completed
  transaction the volume totalizer must advance by the transaction volume.
- `consistency.unrecorded_dispensing`: the totalizer advanced while no
  transaction completed and the nozzle was idle at both readings.
- `consistency.gas_conversion`: the corrector's conversion factor must equal
  `(p / pb) · (Tb / T) · (Zb / Z)` recomputed from its own pressure and
  temperature (the base temperature, 0, 15 or 20 °C, is recognised from the
  first readings; Z from a low-pressure natural-gas approximation), and the
  converted register must advance by factor × unconverted advance.

Per period (from the period snapshots):
- `consistency.register_vs_power`: the energy register advanced by less than
  half or more than double the integrated power over a period under load
  (stopped or running-away register). The statistical comparison of
  register and integrated power is `drift.register_vs_power`.

Failure modes handled: readings missing a field are skipped row by row;
repeated mismatches are reported once per device per day (the count is in
the finding), level conditions are latched with hysteresis.
"""

from __future__ import annotations

import numpy as np

from anomaly._common import DAY_NS, NS, Context, Latch, RateLimit, iso
from anomaly._frame import Frame
from anomaly.batch import FloatArray
from anomaly.finding import Finding, Severity
from anomaly.periods import Periods

P_BASE_BAR = 1.01325
T_BASES_K = np.array([273.15, 288.15, 293.15])


def gas_factor(p_bar: FloatArray, t_c: FloatArray, tb_k: FloatArray) -> FloatArray:
    """Conversion factor C = (p/pb)(Tb/T)(Zb/Z), Z ≈ 1 - 0.0022 p (natural gas, low pressure)."""
    z = 1.0 - 0.0022 * p_bar
    zb = 1.0 - 0.0022 * P_BASE_BAR
    return (p_bar / P_BASE_BAR) * (tb_k / (t_c + 273.15)) * (zb / z)


class Consistency:
    """Register-against-register checks for all devices at once."""

    def __init__(self, ctx: Context, *, gas_tolerance: float = 0.01) -> None:
        self.ctx = ctx
        n = ctx.n
        self.rate = {k: RateLimit(n, DAY_NS) for k in ("amount", "totalizer", "unrecorded")}
        self.gas_latch = Latch(n)
        self.gas_tb = np.full(n, np.nan)
        self.gas_tol = gas_tolerance
        self.reg_latch = Latch(n)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"rate.{k}": r.last_ns for k, r in self.rate.items()}
        out.update(self.gas_latch.arrays("gas_latch"))
        out.update(self.reg_latch.arrays("reg_latch"))
        out["gas_tb"] = self.gas_tb
        return out

    def _pair(
        self, frame: Frame, names: tuple[str, ...]
    ) -> tuple[np.ndarray, dict[str, FloatArray], np.ndarray]:
        """Rows where all `names` are valid, with each field's value at the previous such row."""
        valid = np.ones(frame.n, dtype=bool)
        for k in names:
            valid &= frame.valid(k)
        pi = frame.prev_idx(valid)
        j = np.maximum(pi, 0)
        prev: dict[str, FloatArray] = {}
        for k in names:
            col = frame.cont.get(k, frame.fields[k])
            mem = self.ctx.last.get(k)
            from_state = mem[frame.dev] if mem is not None else np.full(frame.n, np.nan)
            # counters: the remembered raw value plus nothing (offsets only change at resets)
            prev[k] = np.where(pi >= 0, col[j], from_state + (col - frame.fields[k]))
        has = valid & np.all([~np.isnan(prev[k]) for k in names], axis=0)
        return has, prev, pi

    def process(self, frame: Frame) -> list[Finding]:
        out: list[Finding] = []
        f = frame.fields
        if frame.n and {"transaction_amount", "unit_price", "transaction_volume_l"} <= f.keys():
            self._amount(frame, out)
        if frame.n and {"transaction_counter", "totalizer_volume_l"} <= f.keys():
            self._totalizer(frame, out)
        if frame.n and {"pressure_bar", "temperature_c", "conversion_factor"} <= f.keys():
            self._gas(frame, out)
        return out

    def _emit(
        self,
        out: list[Finding],
        frame: Frame,
        r: int,
        detector: str,
        *,
        score: float,
        threshold: float,
        explanation: str,
        start: int | None = None,
        unit: str | None = None,
        severity: Severity = Severity.WARNING,
        estimate: float | None = None,
    ) -> None:
        d = self.ctx.ids[int(frame.dev[r])]
        out.append(
            Finding(
                detector=detector,
                devices=(d,),
                score=float(score),
                threshold=float(threshold),
                window_start_ns=int(frame.ts[r] if start is None else start),
                window_end_ns=int(frame.ts[r]),
                explanation=f"{d}: {explanation}",
                unit=unit,
                severity=severity,
                estimate=estimate,
            )
        )

    def _completed(self, frame: Frame) -> np.ndarray:
        """Rows that show a newly completed transaction."""
        cont = frame.cont.get("transaction_counter")
        if cont is not None:
            has, prev, _ = self._pair(frame, ("transaction_counter",))
            return np.asarray(has & (cont - prev["transaction_counter"] >= 1))
        if "state" in frame.fields:
            st = frame.fields["state"]
            mem = self.ctx.last.get("state", np.full(self.ctx.n, np.nan))
            prev_state, _ = frame.prev("state", mem)
            return np.asarray(frame.valid("state") & (st == 2) & (prev_state != 2))
        return frame.ok.copy()

    def _amount(self, frame: Frame, out: list[Finding]) -> None:
        f = frame.fields
        amt, price, vol = f["transaction_amount"], f["unit_price"], f["transaction_volume_l"]
        done = (
            self._completed(frame)
            & frame.valid("transaction_amount")
            & frame.valid("unit_price")
            & frame.valid("transaction_volume_l")
        )
        diff = amt - price * vol
        tol = 0.011 + 0.0051 * np.abs(price)
        # the price may have changed between the sale and the poll: the sale must match
        # neither the current nor the previous price to count
        old_price, _ = frame.prev("unit_price", self.ctx.mem("unit_price"))
        diff_old = amt - old_price * vol
        tol_old = 0.011 + 0.0051 * np.abs(old_price)
        bad = np.flatnonzero(done & (np.abs(diff) > tol) & ~(np.abs(diff_old) <= tol_old))
        for r in self.rate["amount"].first_per_device(frame, bad):
            n_bad = int(np.sum(frame.dev[bad] == frame.dev[r]))
            self._emit(
                out,
                frame,
                int(r),
                "consistency.amount_price_volume",
                score=abs(diff[r]),
                threshold=tol[r],
                explanation=f"transaction amount {amt[r]:.2f} ≠ {price[r]:.3f} × "
                f"{vol[r]:.2f} L = {price[r] * vol[r]:.2f} (off by {diff[r]:+.2f}; "
                f"{n_bad} such transaction(s) in this batch)",
                unit="currency",
            )

    def _totalizer(self, frame: Frame, out: list[Finding]) -> None:
        names = ("transaction_counter", "totalizer_volume_l")
        with_vol = "transaction_volume_l" in frame.fields
        has, prev, pi = self._pair(frame, names)
        cnt = (
            frame.cont["transaction_counter"]
            if "transaction_counter" in frame.cont
            else (frame.fields["transaction_counter"])
        )
        tot = frame.cont.get("totalizer_volume_l", frame.fields["totalizer_volume_l"])
        d_cnt = cnt - prev["transaction_counter"]
        d_tot = tot - prev["totalizer_volume_l"]
        if with_vol:
            vol = frame.fields["transaction_volume_l"]
            one = has & (np.abs(d_cnt - 1) < 1e-9) & ~np.isnan(vol)
            if "state" in frame.fields:
                # the whole transaction lies between the two readings only if the nozzle
                # was not dispensing at either of them
                st = frame.fields["state"]
                j = np.maximum(pi, 0)
                mem = self.ctx.last.get("state", np.full(self.ctx.n, np.nan))
                st_prev = np.where(pi >= 0, st[j], mem[frame.dev])
                one &= (st != 1) & (st_prev != 1) & ~np.isnan(st_prev)
            diff = d_tot - vol
            tol = 0.02 + 0.001 * np.abs(vol)
            bad = np.flatnonzero(one & (np.abs(diff) > tol))
            for r in self.rate["totalizer"].first_per_device(frame, bad):
                self._emit(
                    out,
                    frame,
                    int(r),
                    "consistency.totalizer_transaction",
                    score=abs(diff[r]),
                    threshold=tol[r],
                    explanation=f"totalizer advanced {d_tot[r]:.2f} L over one transaction "
                    f"of {vol[r]:.2f} L (off by {diff[r]:+.2f} L) at "
                    f"{iso(int(frame.ts[r]))}",
                    unit="L",
                    severity=Severity.CRITICAL,
                )
        if "state" in frame.fields:
            st = frame.fields["state"]
            j = np.maximum(pi, 0)
            st_prev = np.where(
                pi >= 0, st[j], self.ctx.last.get("state", np.full(self.ctx.n, np.nan))[frame.dev]
            )
            idle = (st == 0) & (st_prev == 0)
            bad = np.flatnonzero(has & idle & (np.abs(d_cnt) < 1e-9) & (d_tot > 0.05))
            for r in self.rate["unrecorded"].first_per_device(frame, bad):
                self._emit(
                    out,
                    frame,
                    int(r),
                    "consistency.unrecorded_dispensing",
                    score=d_tot[r],
                    threshold=0.05,
                    explanation=f"totalizer advanced {d_tot[r]:.2f} L with no transaction "
                    "recorded while the nozzle was idle",
                    unit="L",
                    severity=Severity.CRITICAL,
                )

    def _gas(self, frame: Frame, out: list[Finding]) -> None:
        f = frame.fields
        p, t, c = f["pressure_bar"], f["temperature_c"], f["conversion_factor"]
        valid = (
            frame.valid("pressure_bar")
            & frame.valid("temperature_c")
            & frame.valid("conversion_factor")
            & (p > 0)
            & (c > 0)
        )
        # recognise the base temperature from a device's first valid reading
        unknown = valid & np.isnan(self.gas_tb[frame.dev])
        if unknown.any():
            rows = np.flatnonzero(unknown)
            cand = gas_factor(p[rows, None], t[rows, None], T_BASES_K[None, :])
            best = T_BASES_K[np.argmin(np.abs(c[rows, None] / cand - 1), axis=1)]
            self.gas_tb[frame.dev[rows[::-1]]] = best[::-1]  # the earliest row wins
        tb = self.gas_tb[frame.dev]
        calc = gas_factor(p, t, tb)
        dev_rel = c / calc - 1
        tol = np.maximum(self.gas_tol, self.ctx.threshold_pct[frame.dev] / 200)
        on = valid & (np.abs(dev_rel) > tol)
        off = valid & (np.abs(dev_rel) < tol / 2)
        for r in self.gas_latch.update_rows(frame, on, off):
            self._emit(
                out,
                frame,
                int(r),
                "consistency.gas_conversion",
                score=abs(dev_rel[r]) * 100,
                threshold=tol[r] * 100,
                explanation=f"conversion factor {c[r]:.4f} differs by "
                f"{dev_rel[r] * 100:+.2f} % from {calc[r]:.4f} recomputed from "
                f"{p[r]:.3f} bar and {t[r]:.1f} °C (base {tb[r] - 273.15:.0f} °C)",
                unit="%",
                estimate=float(dev_rel[r] * 100),
            )

    def periods(self, per: Periods, period_ns: int) -> list[Finding]:
        """Gross register-vs-power mismatches per electricity period."""
        elec = per.valid & (self.ctx.kind[per.dev] == 0)
        if not elec.any():
            return []
        dev, b, d = per.dev[elec], per.b[elec], per.delta[elec]
        e_reg = d[:, 0] - np.nan_to_num(d[:, 1])
        e_pow, cover_s = d[:, 2], d[:, 3]
        load = (cover_s >= 0.9 * period_ns / NS) & (e_pow >= 0.2)
        ratio = np.where(load, e_reg / np.where(load, e_pow, 1.0), np.nan)
        on = load & ((ratio < 0.5) | (ratio > 2.0))
        off = load & (ratio > 0.8) & (ratio < 1.25)
        # one decision per device: its latest period in this batch
        order = np.lexsort((b, dev))
        last = np.ones(len(order), dtype=bool)
        last[:-1] = dev[order][1:] != dev[order][:-1]
        sel = order[last]
        any_on = np.bincount(dev, weights=on, minlength=self.ctx.n)[dev[sel]] > 0
        due = self.reg_latch.update_devices(dev[sel], any_on, off[sel] & ~any_on)
        out: list[Finding] = []
        for i in np.flatnonzero(due):
            k = int(sel[i]) if on[sel[i]] else int(np.flatnonzero(on & (dev == dev[sel[i]]))[-1])
            name = self.ctx.ids[int(dev[k])]
            word = "stopped" if ratio[k] < 0.05 else ("slow" if ratio[k] < 1 else "running away")
            out.append(
                Finding(
                    detector="consistency.register_vs_power",
                    devices=(name,),
                    score=float(ratio[k]),
                    threshold=0.5 if ratio[k] < 1 else 2.0,
                    window_start_ns=int((b[k] - 1) * period_ns),
                    window_end_ns=int(b[k] * period_ns),
                    severity=Severity.CRITICAL,
                    estimate=float((ratio[k] - 1) * 100),
                    unit="%",
                    explanation=f"{name}: energy register advanced {e_reg[k]:.3f} kWh while power "
                    f"integrates to {e_pow[k]:.3f} kWh over the period ending "
                    f"{iso(int(b[k] * period_ns))} (register {word}, ratio {ratio[k]:.2f})",
                )
            )
        return out
