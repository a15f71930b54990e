"""Small synthetic sites for the anomaly tests (independent of `simulators`).

A fuel station (one tank gauge, J nozzles with chosen errors, an optional
leak) and an electricity feeder with customer meters, generated with numpy
and cut into hourly `Batch`es in engine index order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from anomaly.batch import Batch
from anomaly.engine import DeviceModel, Engine, GroupModel

NS = 1_000_000_000
START_NS = 1_772_409_600 * NS  # 2026-03-02 00:00 UTC


@dataclass
class Site:
    devices: list[DeviceModel]
    groups: list[GroupModel]
    # per device: (ts_ns, fields, ok)
    streams: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]

    def engine(self) -> Engine:
        return Engine(self.devices, self.groups)

    def batches(self, engine: Engine, *, hours: float = 1.0) -> Iterator[Batch]:
        """Time-ordered batches of `hours` each."""
        step = int(hours * 3600 * NS)
        end = max(int(ts[-1]) for ts, _, _ in self.streams.values())
        cuts = {k: 0 for k in self.streams}
        t = START_NS + step
        while t <= end + step:
            parts = []
            for dev_id, (ts, fields, ok) in self.streams.items():
                lo = cuts[dev_id]
                hi = int(np.searchsorted(ts, t, side="left"))
                cuts[dev_id] = hi
                if hi > lo:
                    idx = np.full(hi - lo, engine.index(dev_id), dtype=np.int32)
                    parts.append(
                        Batch(idx, ts[lo:hi], ok[lo:hi], {k: v[lo:hi] for k, v in fields.items()})
                    )
            if parts:
                yield Batch.concat(parts)
            t += step


def fuel_station(
    *,
    days: float = 3,
    seed: int = 0,
    errors: Sequence[float] = (0, 0, 0, 0),
    leak_lph: float = 0.0,
    gauge_noise_l: float = 0.5,
    nozzle_class_mpe: float = 0.5,
    frac: float = 1.0,
    chip: tuple[int, float, float] | None = None,
    step: tuple[int, float, float] | None = None,
    flow_lpm: float | None = None,
) -> Site:
    """Tank T1 with nozzles N1..NJ; `errors[j]` is nozzle j's relative error.

    `chip=(j, extra, share)` adds `extra` on a random `share` of nozzle j's
    transactions; `step=(j, extra, from_h)` adds `extra` to nozzle j's error
    from hour `from_h` on (an edited pulser). With `flow_lpm`, each nozzle
    reports state 1 and its flow rate (that nominal flow, ±6 % per transaction,
    times its registration factor) in the minute a transaction starts.
    """
    rng = np.random.default_rng(seed)
    minutes = int(days * 1440)
    t_min = START_NS + np.arange(1, minutes + 1, dtype=np.int64) * 60 * NS
    hour = (np.arange(1, minutes + 1) // 60) % 24
    rate = np.where((hour >= 6) & (hour < 22), 0.1, 0.01)  # transactions per minute
    j_n = len(errors)
    streams = {}
    true_total = np.zeros(minutes)
    price = 1.85
    for j in range(j_n):
        start = rng.random(minutes) < rate
        vol = np.where(start, rng.uniform(15, 70, minutes), 0.0)
        true_total += vol
        factor = np.full(minutes, 1 + errors[j])
        if chip is not None and chip[0] == j:
            on = rng.random(minutes) < chip[2]
            factor = factor + np.where(on, chip[1], 0.0)
        if step is not None and step[0] == j:
            factor = factor + np.where(np.arange(minutes) >= step[2] * 60, step[1], 0.0)
        shown = np.round(vol * factor, 2)
        extra = {}
        if flow_lpm is not None:
            flow = np.where(start, flow_lpm * rng.normal(1.0, 0.06, minutes) * factor, 0.0)
            extra = {"flow_rate_lpm": flow, "state": start.astype(float)}
        tot = 100000.0 + np.cumsum(shown)
        cnt = 5000 + np.cumsum(start)
        last_vol = _ffill(np.where(start, shown, np.nan), 0.0)
        amount = np.round(last_vol * price, 2)
        streams[f"N{j + 1}"] = (
            t_min,
            {
                "totalizer_volume_l": tot,
                "transaction_counter": cnt.astype(float),
                "transaction_volume_l": last_vol,
                "transaction_amount": amount,
                "unit_price": np.full(minutes, price),
                "state": np.zeros(minutes),
                "calibration_k_factor": np.full(minutes, 100.0),
                **extra,
            },
            np.ones(minutes, dtype=bool),
        )
    # tank: deliveries of 20 000 L every 2 days at 03:00
    deliveries = np.zeros(minutes)
    deliveries[(np.arange(minutes) % (2 * 1440)) == 180] = 20000.0
    hours_elapsed = np.arange(1, minutes + 1) / 60.0
    stock = 25000.0 + np.cumsum(deliveries) - np.cumsum(true_total) - leak_lph * hours_elapsed
    every = np.arange(4, minutes, 5)  # tank gauge every 5 minutes
    streams["T1"] = (
        t_min[every],
        {
            "net_volume_l": stock[every] + rng.normal(0, gauge_noise_l, len(every)),
            "deliveries_net_l": np.cumsum(deliveries)[every],
            "temperature_c": 15 + rng.normal(0, 0.05, len(every)),
        },
        np.ones(len(every), dtype=bool),
    )
    devices = [DeviceModel("T1", "tank_gauge", 0.5)] + [
        DeviceModel(f"N{j + 1}", "dispenser_nozzle", nozzle_class_mpe, frac) for j in range(j_n)
    ]
    groups = [GroupModel("tank1", "tank", "T1", tuple(f"N{j + 1}" for j in range(j_n)))]
    return Site(devices, groups, streams)


def feeder(
    *,
    days: float = 3,
    seed: int = 0,
    errors: Sequence[float] = (0, 0, 0, 0),
    step_s: float = 300.0,
    tech_loss: float = 0.03,
    slow_from_h: float = 0.0,
) -> Site:
    """Feeder F with customers C1..CJ; `errors[j]` slows C_j's register (from `slow_from_h`)."""
    rng = np.random.default_rng(seed)
    n = int(days * 86400 / step_s)
    t = START_NS + np.arange(1, n + 1, dtype=np.int64) * int(step_s * NS)
    hours = np.arange(1, n + 1) * step_s / 3600
    streams = {}
    total_true = np.zeros(n)
    for j, err in enumerate(errors):
        base = rng.uniform(300, 1500)
        daily = 1 + 0.6 * np.sin(2 * np.pi * (hours % 24 - 7) / 24)
        p = np.clip(base * daily * rng.lognormal(0, 0.3, n), 20, None)
        e_true = np.cumsum(p) * step_s / 3600 / 1000
        total_true += p
        factor = np.where(hours >= slow_from_h, 1 + err, 1.0)
        reg = np.cumsum(p * factor) * step_s / 3600 / 1000
        del e_true
        v = 230 + rng.normal(0, 1.5, n)
        streams[f"C{j + 1}"] = (
            t,
            {
                "energy_import_kwh": np.floor((1000 + reg) * 100) / 100,
                "energy_export_kwh": np.zeros(n),
                "power_total_w": p,
                "voltage_l1_v": v,
                "current_l1_a": p / v,
                "device_clock_s": t / NS + rng.normal(0, 1, n),
            },
            np.ones(n, dtype=bool),
        )
    pf = total_true * (1 + tech_loss)
    streams["F"] = (
        t,
        {
            "energy_import_kwh": 50000 + np.cumsum(pf) * step_s / 3600 / 1000,
            "power_total_w": pf,
        },
        np.ones(n, dtype=bool),
    )
    devices = [DeviceModel("F", "electricity", 0.5)] + [
        DeviceModel(f"C{j + 1}", "electricity", 1.0) for j in range(len(errors))
    ]
    groups = [
        GroupModel(
            "feeder1",
            "feeder",
            "F",
            tuple(f"C{j + 1}" for j in range(len(errors))),
            technical_loss_pct=tech_loss * 100,
        )
    ]
    return Site(devices, groups, streams)


def _ffill(x: np.ndarray, first: float) -> np.ndarray:
    idx = np.where(~np.isnan(x), np.arange(len(x)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, x[np.maximum(idx, 0)], first)


def run(site: Site, *, hours: float = 1.0, engine: Engine | None = None):
    """Feed the whole site; return (engine, findings with the batch end time)."""
    eng = engine or site.engine()
    found = []
    for batch in site.batches(eng, hours=hours):
        for f in eng.process(batch):
            found.append(f)
    return eng, found
