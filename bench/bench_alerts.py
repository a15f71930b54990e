"""Alerts/ledger/evidence benchmark: ingest and action cost (each a durable, fsync'ed
transaction with its ledger entry), proof generation and verification, full
ledger verification, the readings digest, and building an evidence bundle.

Run: ``.venv/bin/python bench/bench_alerts.py [--entries N] [--repeats R]``.
Prints medians over the repeats. The disk matters: every ingest and action
commits with ``synchronous=FULL``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anomaly.finding import Finding
from drivers.reading import DeviceKind, Reading
from gateway.alerts import AlertAction, AlertStore
from gateway.evidence import build_bundle, readings_digest
from gateway.ledger import Ledger, verify_inclusion
from gateway.ledger.store import transaction

T0 = 1_764_300_000 * 10**9
DIGEST = "ab" * 32


def finding(device: str, t: int) -> Finding:
    return Finding(
        "reconciliation.tank_nozzle_error",
        (device, "tank1"),
        3.0,
        1.0,
        t - 10**12,
        t,
        "nozzle over-registers",
        estimate=0.8,
        ci_low=0.6,
        ci_high=1.0,
        unit="%",
    )


def per_op(fn: Callable[[int], object], n: int) -> float:
    """Seconds per call of fn(i) for i in range(n)."""
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def one_repeat(tmp: Path, args: argparse.Namespace, readings: list[Reading]) -> dict[str, float]:
    out: dict[str, float] = {}
    store = AlertStore(tmp / "alerts.sqlite")

    def new_alert(i: int) -> None:
        store.ingest(finding(f"d{i}", T0), site="s1", evidence_digest=DIGEST)

    def merge(i: int) -> None:
        store.ingest(finding("d0", T0 + i), site="s1", evidence_digest=DIGEST)

    def ack(i: int) -> None:
        store.act(i + 1, AlertAction.ACKNOWLEDGE, who="bench")

    out["ingest, new alert (ms)"] = 1e3 * per_op(new_alert, args.ops)
    out["ingest, merged into open alert (ms)"] = 1e3 * per_op(merge, args.ops)
    out["act: acknowledge (ms)"] = 1e3 * per_op(ack, args.ops)
    out["query, page of 100 (ms)"] = 1e3 * per_op(lambda i: store.query(limit=100), 50)
    alert, history = store.get(1), store.history(1)
    t0 = time.perf_counter()
    build_bundle(alert, history, readings, store.ledger)
    out[f"build_bundle, {len(readings)} readings (ms)"] = 1e3 * (time.perf_counter() - t0)
    store.close()

    led = Ledger.open(tmp / "ledger.sqlite")
    t0 = time.perf_counter()
    for start in range(0, args.entries, 1000):
        # one transaction per 1000 appends: the per-entry cost without the fsync
        with led._lock, transaction(led._conn):
            for i in range(start, min(start + 1000, args.entries)):
                led.append_in_transaction({"type": "bench", "n": i, "digest": DIGEST})
    out["ledger append, batched (us/entry)"] = 1e6 * (time.perf_counter() - t0) / args.entries
    size, root = led.size, led.root()
    picks = [(i * 7919) % size for i in range(500)]
    proofs: list[list[bytes]] = []
    out["inclusion proof (us)"] = 1e6 * per_op(
        lambda i: proofs.append(led.inclusion_proof(picks[i])), len(picks)
    )
    leaves = [bytes.fromhex(led.entry(p).leaf_hash) for p in picks]
    out["verify inclusion proof (us)"] = 1e6 * per_op(
        lambda i: verify_inclusion(leaves[i], picks[i], size, proofs[i], root), len(picks)
    )
    out["consistency proof (us)"] = 1e6 * per_op(
        lambda i: led.consistency_proof(1 + (i * 104729) % (size - 1)), 500
    )
    t0 = time.perf_counter()
    assert led.verify().ok
    out["ledger verify (us/entry)"] = 1e6 * (time.perf_counter() - t0) / args.entries
    led.close()
    t0 = time.perf_counter()
    readings_digest(readings)
    out["readings_digest (us/reading)"] = 1e6 * (time.perf_counter() - t0) / len(readings)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000, help="ledger size for proofs/verify")
    parser.add_argument("--ops", type=int, default=300, help="durable writes per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    readings = [
        Reading(
            d,
            DeviceKind.DISPENSER_NOZZLE,
            T0 + i * 60 * 10**9,
            i,
            {"volume_l": i * 1.5, "flow_l_min": 35.0 + i % 7},
        )
        for d in ("n1", "tank1")
        for i in range(1440)
    ]
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for name, value in one_repeat(Path(tmp), args, readings).items():
                rows.setdefault(name, []).append(value)
    print(f"entries={args.entries} ops={args.ops} repeats={args.repeats}")
    width = max(len(k) for k in rows)
    print(f"{'measure':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}")
    for name, values in rows.items():
        print(
            f"{name:<{width}}  {statistics.median(values):>10.3f}  {min(values):>10.3f}"
            f"  {max(values):>10.3f}"
        )


if __name__ == "__main__":
    main()
