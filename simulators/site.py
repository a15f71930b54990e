"""The site simulator: runs every device model of a scenario day after day.

Members of a balance group are generated before the group's reference (a
feeder needs its customers' true load, a tank its nozzles' true sales).
Conditions that concern any device kind are applied here: communication
loss (readings missing, `ok` false), sporadic unanswered polls (a device's
`timeout_rate` param, the fraction of polls lost on an honest line) and
device clock skew (the reported `device_clock_s` is off).

Failure modes handled: a sample interval that does not divide a day, and a
device whose reference role is ambiguous (it references two groups of
different types), raise `ScenarioError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.reading import DeviceKind
from simulators.models.common import F64, DayContext, DayOut, Model, of, window
from simulators.models.electricity import ElectricityModel
from simulators.models.fuel import NozzleModel, TankModel
from simulators.models.gas import GasModel
from simulators.models.water import WaterModel
from simulators.spec import DAY_S, NS_PER_S, Label, Scenario, ScenarioError


@dataclass(slots=True)
class DayChunk:
    """One device's samples of one day: times (ns), fields, and which polls got an answer."""

    ts_ns: npt.NDArray[np.int64]
    fields: dict[str, F64]
    ok: npt.NDArray[np.bool_]
    out: DayOut


_ROLE = {"feeder": "feeder", "bulk": "bulk", "check": "check", "tank": "tank"}


class SiteSim:
    """Generates a scenario day by day; `day(d)` must be called for d = 0, 1, 2, ... in order."""

    def __init__(self, scenario: Scenario, *, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.start_s = scenario.start_ns / NS_PER_S
        self.members: dict[str, list[str]] = {}
        roles: dict[str, tuple[str, float]] = {}
        for g in scenario.groups:
            prev = roles.get(g.reference)
            if prev is not None and prev[0] != g.type:
                raise ScenarioError(
                    f"scenario {scenario.name}: {g.reference} is the reference of a "
                    f"{prev[0]} and a {g.type} group"
                )
            roles[g.reference] = (_ROLE.get(g.type, "check"), g.technical_loss_pct)
            self.members.setdefault(g.reference, []).extend(g.members)
        self.models: dict[str, Model] = {}
        for spec in scenario.devices:
            step = scenario.step_for(spec)
            if step <= 0 or abs(DAY_S / step - round(DAY_S / step)) > 1e-9:
                raise ScenarioError(
                    f"scenario {scenario.name}: device {spec.id}: step_s {step} does not "
                    "divide a day (86400 s)"
                )
            role, loss = roles.get(spec.id, ("customer", 0.0))
            conds = scenario.conditions_for(spec.id)
            model: Model
            if spec.kind is DeviceKind.ELECTRICITY:
                model = ElectricityModel(spec, conds, seed=seed, role=role, loss_pct=loss)
            elif spec.kind is DeviceKind.WATER:
                model = WaterModel(spec, conds, seed=seed, role=role, loss_pct=loss)
            elif spec.kind is DeviceKind.GAS:
                model = GasModel(spec, conds, seed=seed, role=role, loss_pct=loss)
            elif spec.kind is DeviceKind.DISPENSER_NOZZLE:
                model = NozzleModel(spec, conds, seed=seed)
            else:
                model = TankModel(spec, conds, seed=seed)
            self.models[spec.id] = model
        self.order = self._order()
        self.next_day = 0

    def _order(self) -> list[str]:
        """Devices in an order where every group member comes before its reference."""
        done: list[str] = []
        visiting: set[str] = set()

        def visit(dev: str) -> None:
            if dev in done:
                return
            if dev in visiting:
                raise ScenarioError(f"scenario {self.scenario.name}: groups form a cycle at {dev}")
            visiting.add(dev)
            for m in self.members.get(dev, []):
                visit(m)
            visiting.discard(dev)
            done.append(dev)

        for spec in self.scenario.devices:
            visit(spec.id)
        return done

    def day(self, d: int) -> dict[str, DayChunk]:
        """Generate day `d` of every device (days must be generated in order)."""
        if d != self.next_day:
            raise ValueError(f"days must be generated in order: expected {self.next_day}, got {d}")
        self.next_day += 1
        outs: dict[str, DayOut] = {}
        chunks: dict[str, DayChunk] = {}
        for dev_id in self.order:
            spec = self.scenario.device(dev_id)
            step = self.scenario.step_for(spec)
            t = d * DAY_S + np.arange(round(DAY_S / step), dtype=np.float64) * step
            ctx = DayContext(day=d, seed=self.seed, start_s=self.start_s, t_rel_s=t, step_s=step)
            members = [(self.scenario.device(m), outs[m]) for m in self.members.get(dev_id, [])]
            out = self.models[dev_id].day(ctx, members)
            outs[dev_id] = out
            fields = dict(out.fields)
            conds = self.scenario.conditions_for(dev_id)
            clock = ctx.t_abs_s.copy()
            for c in of(conds, Label.CLOCK_SKEW):
                w = window(c, t)
                drift = c.param("drift_s_per_day", 0.0) * np.maximum(t - c.start_s, 0.0) / DAY_S
                clock = np.where(w, clock + (c.magnitude or 0.0) + drift, clock)
            fields["device_clock_s"] = np.floor(clock)
            ok = np.ones(t.size, dtype=bool)
            timeout_rate = spec.param("timeout_rate", 0.0)
            if timeout_rate > 0:  # sporadic unanswered polls of an honest line
                ok &= ctx.rng(dev_id, 9).random(t.size) >= timeout_rate
            for c in of(conds, Label.COMM_LOSS):
                ok &= ~window(c, t)
            if not ok.all():
                fields = {k: np.where(ok, v, np.nan) for k, v in fields.items()}
            ts_ns = self.scenario.start_ns + np.round(t * NS_PER_S).astype(np.int64)
            chunks[dev_id] = DayChunk(ts_ns=ts_ns, fields=fields, ok=ok, out=out)
        return chunks
