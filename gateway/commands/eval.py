"""`meterwatch eval`: run the anomaly engine over simulated scenarios and score it.

Each case is the simulators' standard site (tank with four nozzles, feeder
with four customers, bulk water with three households, a gas corrector)
with one injected condition, generated offline (`simulators.offline`) for
several seeds. The streams are fed to `anomaly.engine.Engine` in
time-ordered batches (`--batch-h`, an hour by default), as the gateway
would, and the findings are scored against the ground truth:

- detected: the first finding whose suspect (`devices[0]`, or the top-ranked
  culprit of a `*_balance` finding) is the faulty device, at or after the
  condition starts; time to detect is measured from the start to the end of
  the batch that produced it; "PD in time" counts only the runs detected
  within the case's target time;
- false alarm: any finding that names none of the faulty devices (or names
  one before its condition started);
- honest device-days: every device-day of every run, less the faulty
  devices' days after their condition started.

Runs are spread over worker processes (`--jobs`). `--out` writes the table
as Markdown (docs/eval.md by default when `--write` is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HELP = "score the anomaly engine on simulated fraud and drift scenarios over many seeds"

NS = 1_000_000_000
HOUR_NS = 3600 * NS


@dataclass(frozen=True, slots=True)
class Case:
    """One evaluation case: a catalogue scenario, optionally with its condition replaced."""

    name: str
    scenario: str
    days: int
    target: str
    target_h: float | None = None
    label: str | None = None  # replacement condition: label, device, magnitude, params
    device: str | None = None
    magnitude: float | None = None
    params: tuple[tuple[str, float], ...] = ()
    estimate: str | None = None  # "nozzle" or "leak": score the final estimate
    nozzle_class: str | None = None  # accuracy class of every nozzle (default: the scenario's)
    start_d: float | None = None  # the condition starts on this day (default: the scenario's)


CASES: tuple[Case, ...] = (
    Case("honest site", "honest", 30, "≤ 1 FA / 1000 device-days"),
    Case(
        "nozzle +1 %", "over_registration_1pct", 10, "PD ≥ 0.95 within 24 h", 24, estimate="nozzle"
    ),
    Case(
        "nozzle +0.3 %",
        "over_registration_0_3pct",
        11,
        "PD ≥ 0.95 within 7 d",
        168,
        estimate="nozzle",
    ),
    Case(
        "nozzle +0.15 %",
        "over_registration_0_15pct",
        34,
        "PD ≥ 0.95 within 30 d",
        720,
        estimate="nozzle",
    ),
    # A change needs a before: the same nozzles after two weeks of honest history, as on
    # a gateway that has been running (day 3 leaves only three days to compare with).
    Case(
        "nozzle +1 % after 14 d",
        "over_registration_1pct",
        21,
        "PD ≥ 0.95 within 24 h",
        24,
        estimate="nozzle",
        start_d=14.0,
    ),
    Case(
        "nozzle +0.3 % after 14 d",
        "over_registration_0_3pct",
        22,
        "PD ≥ 0.95 within 7 d",
        168,
        estimate="nozzle",
        start_d=14.0,
    ),
    Case(
        "nozzle +0.15 % after 14 d",
        "over_registration_0_15pct",
        45,
        "PD ≥ 0.95 within 30 d",
        720,
        estimate="nozzle",
        start_d=14.0,
    ),
    # The same, with the nozzles verified to the Chinese MPE (JJG 443: 0.3 %), the
    # limit the 0.3 % target names; and the honest site under that class.
    Case(
        "nozzle +0.3 %, class jjg443",
        "over_registration_0_3pct",
        11,
        "PD ≥ 0.95 within 7 d",
        168,
        estimate="nozzle",
        nozzle_class="jjg443",
    ),
    Case(
        "nozzle +0.15 %, class jjg443",
        "over_registration_0_15pct",
        34,
        "PD ≥ 0.95 within 30 d",
        720,
        estimate="nozzle",
        nozzle_class="jjg443",
    ),
    Case(
        "honest site, class jjg443",
        "honest",
        30,
        "≤ 1 FA / 1000 device-days",
        nozzle_class="jjg443",
    ),
    Case(
        "chip 3 % on 10 % of sales",
        "intermittent_over_registration",
        18,
        "within 14 d",
        336,
        label="intermittent_over_registration",
        device="nozzle-3",
        magnitude=0.03,
        params=(("fraction", 0.1),),
    ),
    Case(
        "tank leak 0.76 L/h",
        "tank_leak",
        34,
        "PD ≥ 0.95 within 30 d (aim 14 d)",
        720,
        label="tank_leak",
        device="tank-1",
        magnitude=0.76,
        estimate="leak",
    ),
    Case("tank leak 3 L/h", "tank_leak", 8, "—", estimate="leak"),
    Case("calibration change", "calibration_change", 6, "first reading", 1),
    Case("totalizer rollback", "totalizer_rollback", 6, "first reading", 1),
    Case("transaction mismatch", "transaction_mismatch", 6, "first reading", 1),
    Case("reverse energy", "reverse_energy", 5, "first reading", 1),
    Case("voltage loss", "voltage_loss", 5, "first reading", 1),
    Case("magnet event", "magnet_event", 5, "first reading", 1),
    Case("cover event", "cover_event", 5, "first reading", 1),
    Case("water reverse flow", "water_reverse_flow", 5, "first reading", 1),
    Case(
        "register slowed 2 %",
        "register_slowed",
        5,
        "within 24 h",
        24,
        label="register_slowed",
        device="meter-4",
        magnitude=0.02,
    ),
    Case("register slowed 30 %", "register_slowed", 5, "—"),
    Case("CT bypass", "ct_bypass", 10, "—"),
    Case("magnet: water consumption drop", "magnet_consumption_drop", 14, "—"),
    Case("stuck water register", "stuck_register", 14, "—"),
    Case("gas converted at a wrong temperature", "gas_wrong_temperature", 20, "—"),
    Case("communication loss", "comm_loss", 6, "—"),
    Case("clock skew", "clock_skew", 5, "—"),
)


@dataclass(slots=True)
class RunResult:
    case: str
    seed: int
    detected: bool
    ttd_h: float | None
    detector: str | None
    false_alarms: int
    fa_detectors: list[str]
    honest_device_days: float
    estimate_error: float | None
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=1, help="seeds per case (default 1)")
    parser.add_argument(
        "--days", type=int, default=None, help="simulated days per run (default: each case's own)"
    )
    parser.add_argument(
        "--case",
        action="append",
        default=None,
        metavar="NAME",
        help="run only cases whose name or scenario contains NAME (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--batch-h", type=float, default=1.0, help="hours of readings per engine batch (default 1)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table as Markdown to this file"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")


def _scenario(case: Case) -> object:
    from simulators.catalogue import catalogue_scenario
    from simulators.spec import Condition, Label

    scn = catalogue_scenario(case.scenario)
    if case.start_d is not None:
        start_s = case.start_d * 86_400.0
        scn = dataclasses.replace(
            scn, conditions=tuple(dataclasses.replace(c, start_s=start_s) for c in scn.conditions)
        )
    if case.label is None:
        return scn
    old = scn.conditions[0] if scn.conditions else None
    cond = Condition(
        device=case.device or (old.device if old else ""),
        label=Label(case.label),
        start_s=old.start_s if old else 3 * 86_400.0,
        end_s=old.end_s if old else None,
        magnitude=case.magnitude,
        params={**(dict(old.params) if old else {}), **dict(case.params)},
    )
    return dataclasses.replace(scn, conditions=(cond,))


def run_case(case: Case, seed: int, days: int, batch_h: float) -> RunResult:
    """Generate one run, feed it to a fresh engine, score the findings."""
    import numpy as np

    from anomaly.batch import Batch
    from anomaly.engine import DeviceModel, Engine, GroupModel
    from anomaly.mpe import mpe_pct
    from simulators.offline import generate
    from simulators.spec import Scenario

    t0 = time.perf_counter()
    scn = _scenario(case)
    assert isinstance(scn, Scenario)
    run = generate(scn, seed=seed, days=days)
    def device_mpe(device_id: str) -> float:
        kind, cls = run.meta(device_id)
        if case.nozzle_class is not None and kind == "dispenser_nozzle":
            cls = case.nozzle_class
        return mpe_pct(kind, cls)

    devices = [DeviceModel(d, s.kind, device_mpe(d)) for d, s in run.devices.items()]
    groups = [
        GroupModel(g.id, g.type, g.reference, tuple(g.members), g.technical_loss_pct)
        for g in run.groups
    ]
    engine = Engine(devices, groups)
    streams = list(run.devices.items())
    names = sorted({f for _, s in streams for f in s.fields})
    idx = np.concatenate([np.full(len(s.ts_ns), engine.index(d), np.int32) for d, s in streams])
    ts = np.concatenate([s.ts_ns for _, s in streams])
    ok = np.concatenate([s.ok for _, s in streams])
    cols = {
        f: np.concatenate([s.fields.get(f, np.full(len(s.ts_ns), np.nan)) for _, s in streams])
        for f in names
    }
    order = np.argsort(ts, kind="stable")
    idx, ts, ok = idx[order], ts[order], ok[order]
    cols = {k: v[order] for k, v in cols.items()}
    step = int(batch_h * HOUR_NS)
    start = run.scenario.start_ns
    edges = np.searchsorted(ts, np.arange(start + step, int(ts[-1]) + step + 1, step))
    found = []
    lo = 0
    for hi in edges:
        if hi > lo:
            end_ns = int(ts[hi - 1])
            batch = Batch(idx[lo:hi], ts[lo:hi], ok[lo:hi], {k: v[lo:hi] for k, v in cols.items()})
            found += [(end_ns, f) for f in engine.process(batch)]
        lo = hi
    truth = run.truth
    bad = {t.device_id: t for t in truth}
    detected, ttd, det_name = False, None, None
    fa, fa_names = 0, []
    for end_ns, f in found:
        suspect = f.devices[0]
        if f.detector.endswith("_balance") and len(f.devices) > 1 and suspect not in bad:
            suspect = f.devices[1]
        t = bad.get(suspect)
        if t is not None and end_ns >= t.start_ns:
            if not detected:
                detected, det_name = True, f.detector
                ttd = max(end_ns - t.start_ns, 0) / HOUR_NS
            continue
        if any(d in bad and end_ns >= bad[d].start_ns for d in f.devices):
            continue  # corroborating finding about the faulty device's group
        fa += 1
        fa_names.append(f.detector)
    end_all = start + days * 86_400 * NS
    faulty_days = sum(max(end_all - t.start_ns, 0) for t in truth) / (86_400 * NS)
    honest_days = len(devices) * days - faulty_days
    est_err = None
    if case.estimate and truth:
        t = truth[0]
        if case.estimate == "nozzle":
            spec = run.spec(t.device_id)
            true_pct = ((1 + spec.true_error) * (1 + (t.magnitude or 0.0)) - 1) * 100
            # the current estimate (steps found fitted), as an inspector reads it at the end
            rep = engine.group_report("tank-1")
            scale = "current" if "current" in rep.scales else "7 d"
            est_err = rep.member(t.device_id, scale).error_pct - true_pct
        elif case.estimate == "leak":
            est_err = engine.group_report("tank-1").loss_per_h - (t.magnitude or 0.0)
    return RunResult(
        case.name,
        seed,
        detected,
        ttd,
        det_name,
        fa,
        fa_names,
        honest_days,
        est_err,
        time.perf_counter() - t0,
    )


def _pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _h(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} h" if value < 72 else f"{value / 24:.1f} d"


def table(results: Sequence[RunResult], cases: Sequence[Case], seeds: int, days: int | None) -> str:
    lines = [
        f"Seeds per case: {seeds}; batches of readings per hour; "
        f"days per run: {'per case' if days is None else days}.",
        "",
        "| case | target | PD | PD in time | FA / 1000 honest device-days | median TTD | "
        "p95 TTD | estimate error | first detector |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        rs = [r for r in results if r.case == case.name]
        if not rs:
            continue
        ttds = [r.ttd_h for r in rs if r.ttd_h is not None]
        hd = sum(r.honest_device_days for r in rs)
        fa = sum(r.false_alarms for r in rs)
        has_truth = case.scenario != "honest"
        pd = f"{sum(r.detected for r in rs) / len(rs):.2f}" if has_truth else "—"
        in_time = "—"
        if has_truth and case.target_h is not None:
            limit = case.target_h
            hits = sum(r.ttd_h is not None and r.ttd_h <= limit for r in rs)
            in_time = f"{hits / len(rs):.2f}"
        est = [r.estimate_error for r in rs if r.estimate_error is not None]
        unit = " pp" if case.estimate == "nozzle" else " L/h"
        est_s = f"{statistics.fmean(abs(e) for e in est):.3f}{unit} (mean abs)" if est else "—"
        dets = sorted({r.detector for r in rs if r.detector})
        lines.append(
            f"| {case.name} | {case.target} | {pd} | {in_time} | {fa / hd * 1000:.2f} ({fa}) | "
            f"{_h(statistics.median(ttds)) if ttds else '—'} | "
            f"{_h(_pct(ttds, 0.95)) if ttds else '—'} | {est_s} | {', '.join(dets) or '—'} |"
        )
    hd = sum(r.honest_device_days for r in results)
    fa = sum(r.false_alarms for r in results)
    lines.append("")
    lines.append(
        f"All cases: {fa} false alarm(s) over {hd:.0f} honest device-days = "
        f"{fa / max(hd, 1e-9) * 1000:.2f} per 1000 device-days."
    )
    kinds: dict[str, int] = {}
    for r in results:
        for name in r.fa_detectors:
            kinds[name] = kinds.get(name, 0) + 1
    if kinds:
        lines.append(
            "False alarms by detector: "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
            + "."
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cases = [
        c
        for c in CASES
        if not args.case
        or any(n.lower() in c.name.lower() or n.lower() in c.scenario for n in args.case)
    ]
    if args.list:
        for c in cases:
            print(f"{c.name:34} {c.scenario:32} {c.days:3d} d  {c.target}")
        return 0
    if not cases:
        print("no case matches", file=sys.stderr)
        return 1
    jobs = [
        (c, seed, args.days or c.days, args.batch_h)
        for c in cases
        for seed in range(1, args.seeds + 1)
    ]
    # longest runs first, so the workers finish together
    jobs.sort(key=lambda j: -j[2])
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_case, *zip(*jobs, strict=True)))
    else:
        results = [run_case(*j) for j in jobs]
    text = table(results, cases, args.seeds, args.days)
    print(text)
    print(f"\n{len(results)} runs in {time.perf_counter() - t0:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Evaluation of the anomaly engine\n\nGenerated by "
            f"`meterwatch eval --seeds {args.seeds}"
            f"{f' --days {args.days}' if args.days else ''}`.\n\n{text}\n",
            encoding="utf-8",
        )
    return 0
