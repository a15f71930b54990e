"""The streaming anomaly engine: batches of readings in, findings out.

`Engine(devices, groups)` holds all per-device state in numpy arrays
(bounded: a few kilobytes per device, independent of how long it runs) and
runs the detector families on every batch, vectorised across devices:

- integrity (`anomaly.integrity`), data quality (`anomaly.quality`) and
  consistency (`anomaly.consistency`) per reading;
- period snapshots (`anomaly.periods`), then per device and period the
  register-vs-power drift (`anomaly.drift`) and the behaviour scorer
  (`anomaly.behaviour`);
- reconciliation per balance group (`anomaly.reconciliation`), once per
  completed period of the group.

`save_state()` returns the whole state as bytes; `load_state(data)` (or
`Engine.restore(devices, groups, data)`) puts it back, mapping devices and
groups by id, so a restart, or a config that adds or removes devices, keeps
the statistics of the devices that remain.

Failure modes handled: unknown device kinds, groups naming unknown devices
or an unknown type (`EngineConfigError`, naming the device or group);
malformed batches (`BatchError`, naming the column); state from another
format version or with mismatched arrays (`StateError`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anomaly import integrity, quality
from anomaly._common import KIND_CODE, KINDS, NS, Context
from anomaly._frame import Frame
from anomaly.batch import Batch
from anomaly.behaviour import ShiftDetector
from anomaly.consistency import Consistency
from anomaly.drift import DriftTracker
from anomaly.finding import Finding
from anomaly.integrity import Integrity
from anomaly.periods import RING, Snapshots
from anomaly.quality import DataQuality
from anomaly.reconciliation import BalanceGroup, GroupReport, flow

STATE_VERSION = 1
GROUP_TYPES = ("tank", "feeder", "bulk", "check")
METER_KINDS = ("electricity", "water", "gas")


class EngineConfigError(ValueError):
    """The devices or groups given to the engine are inconsistent (message names which)."""


class StateError(ValueError):
    """Saved state cannot be loaded into this engine."""


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """A device as the engine sees it.

    `mpe_pct` is the class MPE; detectors alert at `threshold_mpe_fraction` ×
    MPE (and decide at half of that). `export_expected` marks prosumers whose
    export register may rise.
    """

    id: str
    kind: str
    mpe_pct: float
    threshold_mpe_fraction: float = 1.0
    export_expected: bool = False


@dataclass(frozen=True, slots=True)
class GroupModel:
    """A balance group: `reference` feeds `members` (types tank/feeder/bulk/check)."""

    id: str
    type: str
    reference: str
    members: tuple[str, ...]
    technical_loss_pct: float = 0.0


_TRACKED = (*integrity.TRACKED, *quality.FROZEN_S, "state", "device_clock_s", "unit_price")


class Engine:
    """Runs every detector family over batches; see the module docstring."""

    def __init__(
        self,
        devices: Sequence[DeviceModel],
        groups: Sequence[GroupModel] = (),
        *,
        period_s: float = 3600.0,
    ) -> None:
        ids = [d.id for d in devices]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise EngineConfigError(f"duplicate device ids: {', '.join(dup)}")
        for d in devices:
            if d.kind not in KIND_CODE:
                raise EngineConfigError(
                    f"device {d.id}: unknown kind {d.kind!r} (known: {', '.join(KINDS)})"
                )
            if not d.mpe_pct > 0 or not d.threshold_mpe_fraction > 0:
                raise EngineConfigError(
                    f"device {d.id}: mpe_pct and threshold_mpe_fraction must be positive"
                )
        self.devices = tuple(devices)
        self.groups = tuple(groups)
        self._index = {d: i for i, d in enumerate(ids)}
        n = len(ids)
        self.period_ns = int(period_s * NS)
        self.ctx = Context(
            ids=tuple(ids),
            kind=np.array([KIND_CODE[d.kind] for d in devices], dtype=np.int8),
            mpe_pct=np.array([d.mpe_pct for d in devices], dtype=float),
            threshold_pct=np.array(
                [d.mpe_pct * d.threshold_mpe_fraction for d in devices], dtype=float
            ),
            export_expected=np.array([d.export_expected for d in devices], dtype=bool),
            last={},
        )
        self.integrity = Integrity(self.ctx)
        self.quality = DataQuality(self.ctx)
        self.consistency = Consistency(self.ctx)
        self.snapshots = Snapshots(self.ctx, period_s=period_s)
        # a day of periods before an alarm (the first hours' moving range is too short to
        # know how much the register-vs-power sampling scatters), and an EWMA alarm only
        # after three periods in a row (a few noisy low-load hours are not a drift)
        self.register_drift = DriftTracker(n, min_periods=24, ewma_persist=3)
        self.shift = ShiftDetector(n)
        self.balance: list[BalanceGroup] = []
        self.check_groups: list[GroupModel] = []
        for g in groups:
            self._add_group(g)
        self.ctx.reference = np.zeros(n, dtype=bool)
        self.ctx.reference[[self._index[g.reference] for g in groups]] = True
        self.check_drift = DriftTracker(len(self.check_groups))
        self.check_next_b = np.full(len(self.check_groups), -1, dtype=np.int64)

    def _add_group(self, g: GroupModel) -> None:
        if g.type not in GROUP_TYPES:
            raise EngineConfigError(
                f"group {g.id}: unknown type {g.type!r} (known: {', '.join(GROUP_TYPES)})"
            )
        for m in (g.reference, *g.members):
            if m not in self._index:
                raise EngineConfigError(f"group {g.id}: unknown device {m!r}")
        if not g.members:
            raise EngineConfigError(f"group {g.id}: no members")
        if g.type == "check":
            if len(g.members) != 1:
                raise EngineConfigError(f"group {g.id}: a check group has exactly one member")
            self.check_groups.append(g)
            return
        kinds = [self.devices[self._index[m]].kind for m in g.members]
        ref_kind = self.devices[self._index[g.reference]].kind
        if g.type == "tank" and (
            ref_kind != "tank_gauge" or any(k != "dispenser_nozzle" for k in kinds)
        ):
            raise EngineConfigError(
                f"group {g.id}: a tank group needs a tank_gauge reference "
                "and dispenser_nozzle members"
            )
        members = [self._index[m] for m in g.members]
        self.balance.append(
            BalanceGroup(
                gid=g.id,
                type=g.type,
                ref=self._index[g.reference],
                members=members,
                ref_kind=ref_kind,
                member_kinds=kinds,
                ids=self.ctx.ids,
                member_threshold=self.ctx.threshold_pct[members] / 100.0,
                ref_threshold=float(self.ctx.threshold_pct[self._index[g.reference]] / 100.0),
                technical_loss_pct=g.technical_loss_pct,
            )
        )

    # -- public API -------------------------------------------------------------------

    def index(self, device_id: str) -> int:
        """The engine's index of `device_id` (for `Batch.device_idx`); KeyError if unknown."""
        try:
            return self._index[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}") from None

    def process(self, batch: Batch) -> list[Finding]:
        """Run all detectors on `batch`; return the findings that are due."""
        b = batch.checked(self.ctx.n)
        if not len(b):
            return []
        frame = Frame(b)
        out = self.integrity.process(frame)
        out += self.quality.process(frame)
        out += self.consistency.process(frame)
        per = self.snapshots.process(frame, self.quality.dt_s)
        self._tank_levels(b)
        if len(per.dev):
            out += self.consistency.periods(per, self.period_ns)
            out += self._device_periods(per)
            out += self._groups()
        self.ctx.remember(frame, _TRACKED)
        return out

    def group_report(self, group_id: str) -> GroupReport:
        """Current estimates of a tank/feeder/bulk group (member errors, loss, SIR result)."""
        for g in self.balance:
            if g.gid == group_id:
                return g.report()
        raise KeyError(f"no tank/feeder/bulk group {group_id!r}")

    def behaviour_score(self, device_id: str) -> float:
        """The behaviour score in [0, 1] of the device's latest period (0 = as expected)."""
        return float(self.shift.last_score[self.index(device_id)])

    # -- per device periods -------------------------------------------------------------

    def _device_periods(self, per: object) -> list[Finding]:
        from anomaly.periods import Periods

        assert isinstance(per, Periods)
        out: list[Finding] = []
        kind = self.ctx.kind[per.dev]
        t_end = per.b * self.period_ns
        d = per.delta
        # register against integrated power (electricity)
        elec = per.valid & (kind == KIND_CODE["electricity"])
        if elec.any():
            e_pow, cover = d[elec, 2], d[elec, 3]
            e_reg = d[elec, 0] - np.nan_to_num(d[elec, 1])
            use = (cover >= 0.9 * self.period_ns / NS) & (e_pow >= 0.05)
            dev = per.dev[elec][use]
            resid = e_reg[use] / e_pow[use] - 1.0
            self.register_drift.update(
                dev, t_end[elec][use], resid, e_pow[use], self.ctx.threshold_pct[dev] / 100.0
            )
            touched = np.unique(dev)
            out += self.register_drift.findings(
                touched,
                [self.ctx.ids[i] for i in touched],
                self.ctx.threshold_pct[touched] / 100.0,
                detector="drift.register_vs_power",
                what="energy register against integrated power",
                period_ns=self.period_ns,
            )
        # behaviour of consumption (meters)
        meter = per.valid & (kind <= KIND_CODE["gas"])
        if meter.any():
            dm = d[meter]
            k = kind[meter]
            x = np.where(k == KIND_CODE["gas"], dm[:, 0], dm[:, 0])
            self.shift.update(per.dev[meter], t_end[meter], x)
            out += self.shift.findings(self.ctx.ids, self.ctx.kind, np.unique(per.dev[meter]))
        return out

    # -- groups ---------------------------------------------------------------------------

    def _ready_range(self, devs: np.ndarray, next_b: int) -> tuple[int, int]:
        latest = self.snapshots.latest_b[devs]
        if (latest < 0).any() and latest.max() < 0:
            return 0, -1
        hi = int(latest.min())
        top = int(latest.max())
        if hi < 0 or top - hi > RING // 2:
            hi = top - RING // 2  # a lagging or dead device: skip its periods
        lo = next_b if next_b >= 0 else hi
        lo = max(lo, hi - RING + 2)
        return lo, hi

    def _tank_levels(self, b: Batch) -> None:
        """Feed each tank group's level fit with the batch's gauge and nozzle readings."""
        for g in self.balance:
            if g.level is None:
                continue

            def rows(dev: int, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
                m = (b.device_idx == dev) & b.ok
                # the first field is required. A gauge without a delivery register: its
                # deliveries show as outlying steps, which start a new segment of the level
                # fit; without gross volumes nozzle sales are taken as they are (ratio 1); a
                # nozzle without a state field is idle when its totalizer stands still
                nan = np.full(len(b), np.nan)
                fill = {"deliveries_net_l": np.zeros(len(b)), "gross_volume_l": nan, "state": nan}
                cols = [b.fields.get(n, fill.get(n)) for n in names]
                if any(c is None for c in cols):
                    return np.empty(0, np.int64), np.empty((0, len(names)))
                vals = np.column_stack([np.asarray(c)[m] for c in cols if c is not None])
                m_ts = b.ts_ns[m]
                keep = np.isfinite(vals[:, 0])
                if len(names) == 3:
                    keep &= np.isfinite(vals[:, 2])
                order = np.argsort(m_ts[keep], kind="stable")
                return m_ts[keep][order], vals[keep][order]

            flows = [rows(int(m), ("flow_rate_lpm", "state")) for m in g.members]
            g.add_flows(
                [f[0] for f in flows], [f[1][:, 0] for f in flows], [f[1][:, 1] for f in flows]
            )
            t_ts, t_vals = rows(g.ref, ("net_volume_l", "gross_volume_l", "deliveries_net_l"))
            nz = [rows(int(m), ("totalizer_volume_l", "state")) for m in g.members]
            g.level.add_readings(
                t_ts,
                t_vals,
                [n[0] for n in nz],
                [n[1][:, 0] for n in nz],
                [n[1][:, 1] for n in nz],
            )

    def _groups(self) -> list[Finding]:
        out: list[Finding] = []
        snaps = self.snapshots
        hours = self.period_ns / (3600 * NS)
        for g in self.balance:
            devs = g.devices
            lo, hi = self._ready_range(devs, int(g.next_b[0]))
            for bb in range(lo, hi + 1):
                v1, p1 = snaps.get(devs, bb)
                v0, p0 = snaps.get(devs, bb - 1)
                if not (p1.all() and p0.all()):
                    continue
                delta = v1 - v0
                if g.type == "tank":
                    ref_flow = -delta[0, 0] + np.nan_to_num(delta[0, 1])
                else:
                    ref_flow = float(flow(g.ref_kind, delta[:1])[0])
                x = np.array(
                    [float(flow(k, delta[j + 1 : j + 2])[0]) for j, k in enumerate(g.member_kinds)]
                )
                if g.type == "tank":
                    # nozzles measure at product temperature; the tank's net/gross ratio
                    # converts their sales to the 15 degC volumes the stock is kept in
                    ratios = np.array([v0[0, 0] / v0[0, 2], v1[0, 0] / v1[0, 2]])
                    ratios = ratios[np.isfinite(ratios)]
                    k_net = float(ratios.mean()) if len(ratios) else 1.0
                    if 0.9 < k_net < 1.1:
                        x = x * k_net
                if np.isfinite(ref_flow) and np.isfinite(x).all():
                    g.add_period(x, float(ref_flow), hours, bb * self.period_ns)
            if hi >= lo:
                g.next_b[0] = hi + 1
                out += g.findings(self.period_ns)
        if self.check_groups:
            out += self._checks()
        return out

    def _checks(self) -> list[Finding]:
        snaps = self.snapshots
        rows_i: list[int] = []
        rows_t: list[int] = []
        rows_e: list[float] = []
        rows_w: list[float] = []
        for gi, g in enumerate(self.check_groups):
            ref, mem = self._index[g.reference], self._index[g.members[0]]
            devs = np.array([ref, mem], dtype=np.intp)
            lo, hi = self._ready_range(devs, int(self.check_next_b[gi]))
            kinds = (self.devices[ref].kind, self.devices[mem].kind)
            for bb in range(lo, hi + 1):
                v1, p1 = snaps.get(devs, bb)
                v0, p0 = snaps.get(devs, bb - 1)
                if not (p1.all() and p0.all()):
                    continue
                delta = v1 - v0
                r = float(flow(kinds[0], delta[:1])[0])
                m = float(flow(kinds[1], delta[1:])[0])
                if np.isfinite(r) and np.isfinite(m) and r > 0:
                    rows_i.append(gi)
                    rows_t.append(bb * self.period_ns)
                    rows_e.append(m / r - 1.0)
                    rows_w.append(r)
            if hi >= lo:
                self.check_next_b[gi] = hi + 1
        if not rows_i:
            return []
        idx = np.array(rows_i, dtype=np.intp)
        w = np.array(rows_w)
        # weight relative to the group's typical period flow, and skip near-empty periods
        thr = (
            np.array(
                [
                    self.ctx.threshold_pct[self._index[self.check_groups[i].members[0]]]
                    for i in rows_i
                ]
            )
            / 100.0
        )
        self.check_drift.update(idx, np.array(rows_t, dtype=np.int64), np.array(rows_e), w, thr)
        touched = np.unique(idx)
        groups = [self.check_groups[i] for i in touched]
        thr_t = (
            np.array([self.ctx.threshold_pct[self._index[g.members[0]]] for g in groups]) / 100.0
        )
        return self.check_drift.findings(
            touched,
            [g.members[0] for g in groups],
            thr_t,
            detector="reconciliation.check_meter",
            what="registered volume against its check meter",
            period_ns=self.period_ns,
            devices=[(g.members[0], g.reference) for g in groups],
        )

    # -- state ----------------------------------------------------------------------------

    def _device_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for prefix, module in (
            ("integrity", self.integrity),
            ("quality", self.quality),
            ("consistency", self.consistency),
            ("snap", self.snapshots),
            ("regdrift", self.register_drift),
            ("shift", self.shift),
        ):
            out.update({f"{prefix}.{k}": v for k, v in module.arrays().items()})
        out.update({f"last.{k}": v for k, v in self.ctx.last.items()})
        return out

    def _group_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        return {f"{g.gid}": g.arrays() for g in self.balance}

    def _signature(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "period_ns": self.period_ns,
            "devices": list(self.ctx.ids),
            "groups": {g.id: [g.type, g.reference, list(g.members)] for g in self.groups},
            "checks": [g.id for g in self.check_groups],
        }

    def save_state(self) -> bytes:
        """All statistics as bytes (numpy .npz); see `load_state`."""
        arrays: dict[str, Any] = {f"d:{k}": v for k, v in self._device_arrays().items()}
        for gid, arrs in self._group_arrays().items():
            arrays.update({f"g:{gid}:{k}": v for k, v in arrs.items()})
        arrays.update({f"c:{k}": v for k, v in self.check_drift.arrays().items()})
        arrays["c:next_b"] = self.check_next_b
        header = json.dumps(self._signature()).encode()
        buf = io.BytesIO()
        arrays["__header__"] = np.frombuffer(header, dtype=np.uint8)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def load_state(self, data: bytes) -> None:
        """Restore statistics saved by `save_state`, mapping devices and groups by id."""
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
            header = json.loads(npz["__header__"].tobytes())
        except (ValueError, KeyError, OSError) as exc:
            raise StateError(f"not a meterwatch engine state: {exc}") from None
        if header.get("version") != STATE_VERSION:
            raise StateError(f"state version {header.get('version')} is not {STATE_VERSION}")
        if header.get("period_ns") != self.period_ns:
            raise StateError("state was saved with another period length")
        old_ids: list[str] = header["devices"]
        old_pos = np.array([i for i, d in enumerate(old_ids) if d in self._index], dtype=np.intp)
        new_pos = np.array([self._index[old_ids[i]] for i in old_pos], dtype=np.intp)
        live = self._device_arrays()
        for key in npz.files:
            if not key.startswith("d:"):
                continue
            name = key[2:]
            saved = npz[key]
            if name.startswith("last.") and name not in live:
                arr = np.full(self.ctx.n, np.nan)
                self.ctx.last[name[5:]] = arr
                live[name] = arr
            target = live.get(name)
            if target is None:
                continue
            if saved.shape[1:] != target.shape[1:] or saved.shape[0] != len(old_ids):
                raise StateError(
                    f"state array {name} has shape {saved.shape}, "
                    f"expected {(len(old_ids), *target.shape[1:])}"
                )
            target[new_pos] = saved[old_pos]
        old_groups: Mapping[str, list[object]] = header["groups"]
        mine = {g.id: [g.type, g.reference, list(g.members)] for g in self.groups}
        for g in self.balance:
            if old_groups.get(g.gid) != mine[g.gid]:
                continue  # new or changed group: start its statistics afresh
            for name, target in g.arrays().items():
                key = f"g:{g.gid}:{name}"
                if key in npz.files:
                    target[...] = npz[key]
            g.forget_cache()
        if header.get("checks") == [g.id for g in self.check_groups] and all(
            old_groups.get(g.id) == mine[g.id] for g in self.check_groups
        ):
            for name, target in self.check_drift.arrays().items():
                if f"c:{name}" in npz.files:
                    target[...] = npz[f"c:{name}"]
            self.check_next_b[...] = npz["c:next_b"]

    @classmethod
    def restore(
        cls,
        devices: Sequence[DeviceModel],
        groups: Sequence[GroupModel],
        state: bytes,
        **options: float,
    ) -> Engine:
        """A new engine for `devices`/`groups` with the statistics from `state`."""
        engine = cls(devices, groups, **options)
        engine.load_state(state)
        return engine

    def memory_bytes(self) -> int:
        """Bytes held in state arrays (for the benchmark)."""
        total = sum(a.nbytes for a in self._device_arrays().values())
        total += sum(a.nbytes for arrs in self._group_arrays().values() for a in arrs.values())
        return int(total)


__all__ = [
    "METER_KINDS",
    "Batch",
    "DeviceModel",
    "Engine",
    "EngineConfigError",
    "GroupModel",
    "StateError",
]
