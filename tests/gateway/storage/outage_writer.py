"""A minimal gateway-side writer for the outage test: Outbox + Forwarder to InfluxDB v1.

Run as ``python -m tests.gateway.storage.outage_writer OUTBOX URL DB PROGRESS DEVICES``.
It appends readings of DEVICES electricity meters in small batches as fast as
a 10 ms tick allows, and after every append has returned (the batch is taken)
appends the batch's last seq to PROGRESS. It resumes after the last seq in
PROGRESS. Timestamps are a pure function of seq, as a re-polled reading would
be identical, so readings taken but not recorded before a SIGKILL are
regenerated identically. SIGTERM: stop taking, drain the outbox, exit 0 (3 if
the drain timed out).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from drivers.reading import DeviceKind, Reading
from gateway.storage import Backoff, Forwarder, InfluxV1Store, Outbox, ReadingEncoder

BASE_NS = 1_700_000_000 * 10**9
SEQS_PER_BATCH = 5
SITE = "outage"


def last_seq(progress: Path) -> int:
    if not progress.exists():
        return -1
    lines = [line for line in progress.read_text().splitlines() if line.strip()]
    return int(lines[-1]) if lines else -1


async def main(outbox_path: Path, url: str, db: str, progress: Path, devices: int) -> int:
    encoder = ReadingEncoder(site_id=SITE)
    outbox = await Outbox.open(outbox_path, max_bytes=256 * 2**20, encoder=encoder)
    store = InfluxV1Store(url=url, database=db, encoder=encoder, timeout_s=2.0)
    forwarder = Forwarder(
        outbox,
        store,
        batch_points=2000,
        idle_wait_s=0.05,
        backoff=Backoff(initial_s=0.05, max_s=0.5),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    forwarding = asyncio.create_task(forwarder.run(), name="forwarder")
    seq = last_seq(progress) + 1
    with progress.open("a") as out:
        while not stop.is_set():
            batch = [
                Reading(
                    f"meter-{d}",
                    DeviceKind.ELECTRICITY,
                    BASE_NS + s * 1_000_000,
                    s,
                    {"energy_import_kwh": s * 0.001, "power_total_w": float(d)},
                )
                for s in range(seq, seq + SEQS_PER_BATCH)
                for d in range(devices)
            ]
            await outbox.append_readings(batch)
            seq += SEQS_PER_BATCH
            out.write(f"{seq - 1}\n")
            out.flush()
            await asyncio.sleep(0.01)
    forwarding.cancel()
    await asyncio.gather(forwarding, return_exceptions=True)
    drained = await forwarder.drain(timeout_s=30)
    await outbox.close()
    await store.close()
    return 0 if drained else 3


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(asyncio.run(main(Path(args[0]), args[1], args[2], Path(args[3]), int(args[4]))))
