"""The readings digest and the CSV it can be recomputed from (pure functions).

`readings_digest` hashes a canonical serialisation of readings (device, seq,
ts_ns, quality, sorted fields; order-independent). The implementation is
the one shipped inside every evidence bundle (`verify_bundle.py`), so the
digest recorded in the ledger and the one an outsider recomputes from the
bundle's CSV are computed by the same code. `readings_csv` writes floats in
their shortest round-trip form, so parsing the CSV gives back the same
numbers and the same digest.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime

from drivers.reading import Reading
from gateway.evidence.verify_bundle import CSV_FIXED, digest_records


def cited_readings(
    readings: Iterable[Reading], *, devices: Collection[str], start_ns: int, end_ns: int
) -> list[Reading]:
    """The readings a finding cites: its devices', ``start_ns <= ts_ns <= end_ns``, any quality.

    Use the same selection when computing the digest at ingest
    (``readings_digest(cited_readings(..., devices=finding.devices,
    start_ns=finding.window_start_ns, end_ns=finding.window_end_ns))``) and
    when building the bundle, or the bundle's digest check fails.
    """
    wanted = set(devices)
    return [r for r in readings if r.device_id in wanted and start_ns <= r.ts_ns <= end_ns]


def readings_digest(readings: Sequence[Reading]) -> str:
    """Hex SHA-256 of the canonical form of `readings` (see `verify_bundle.py`)."""
    return digest_records((r.device_id, r.seq, r.ts_ns, str(r.quality), r.fields) for r in readings)


def iso_utc(ts_ns: int) -> str:
    """``2026-11-28T08:00:00.123Z`` (milliseconds) for a UTC nanosecond timestamp."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // 1_000_000:03d}Z"


def readings_csv(readings: Sequence[Reading]) -> str:
    """CSV of the readings, sorted like the digest: one column per field name (empty = absent).

    ``time_utc`` is for people; the digest uses ``ts_ns``.
    """
    names = sorted({name for r in readings for name in r.fields})
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_FIXED, *names])
    for r in sorted(readings, key=lambda r: (r.device_id, r.seq, r.ts_ns)):
        writer.writerow(
            [
                r.device_id,
                r.seq,
                r.ts_ns,
                iso_utc(r.ts_ns),
                str(r.quality),
                *(repr(float(r.fields[n])) if n in r.fields else "" for n in names),
            ]
        )
    return out.getvalue()
