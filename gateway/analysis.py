"""The analysis stage: readings -> columnar batches -> the anomaly engine -> findings.

It also keeps, per device, a bounded ring of the most recent readings, so that
when a finding appears the raw readings it cites can be digested for the
evidence ledger (`cited_readings`). The engine runs in a worker thread
(numpy work must not stall the event loop) and one batch at a time.

Failure modes handled: readings of devices the engine does not know (ignored,
counted), readings with bad quality (passed with ok=False so detectors can see
gaps), a corrupt or incompatible saved engine state (logged; the engine starts
fresh rather than refusing to run), and state saves that fail (logged, retried
at the next interval; writes are atomic so a crash never leaves half a file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anomaly.batch import Batch
from anomaly.engine import DeviceModel, Engine, GroupModel
from anomaly.finding import Finding
from drivers.reading import Quality, Reading
from gateway.config import Settings

log = logging.getLogger("meterwatch.analysis")

# Readings kept per device for evidence digests: bounded so memory stays flat.
RING_READINGS = 600


def engine_from_settings(settings: Settings) -> Engine:
    """Build the engine's device and group models from the config."""
    devices = [
        DeviceModel(
            id=d.id,
            kind=d.kind.value,
            mpe_pct=d.effective_mpe_pct,
            threshold_mpe_fraction=d.threshold_mpe_fraction,
            export_expected=d.export_expected,
        )
        for d in settings.devices
        if d.enabled
    ]
    groups = [
        GroupModel(
            id=g.id,
            type=g.type.value,
            reference=g.reference,
            members=tuple(g.members),
            technical_loss_pct=g.technical_loss_pct,
        )
        for g in settings.groups
    ]
    return Engine(devices, groups)


def to_batch(engine: Engine, readings: Sequence[Reading]) -> tuple[Batch, int]:
    """Columnar batch of the readings the engine knows; returns it and the count skipped."""
    known: list[Reading] = []
    idx: list[int] = []
    skipped = 0
    for r in readings:
        try:
            idx.append(engine.index(r.device_id))
        except KeyError:
            skipped += 1
            continue
        known.append(r)
    n = len(known)
    # Python lists first, one numpy conversion per column: element-wise numpy
    # assignment costs more than the whole detector pass.
    columns: dict[str, list[float]] = {}
    nan = float("nan")
    for i, r in enumerate(known):
        for name, value in r.fields.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [nan] * n
            column[i] = value
    batch = Batch(
        device_idx=np.array(idx, dtype=np.int32),
        ts_ns=np.array([r.ts_ns for r in known], dtype=np.int64),
        ok=np.array([r.quality == Quality.OK for r in known], dtype=np.bool_),
        fields={name: np.array(col, dtype=np.float64) for name, col in columns.items()},
    )
    return batch, skipped


class AnalysisStage:
    """Feeds the engine and remembers recent readings for evidence digests."""

    def __init__(self, engine: Engine, *, state_path: Path | None = None) -> None:
        self.engine = engine
        self.state_path = state_path
        self.unknown_device_readings = 0
        self._recent: dict[str, deque[Reading]] = {}
        self._lock = asyncio.Lock()
        if state_path is not None and state_path.exists():
            try:
                engine.load_state(state_path.read_bytes())
                log.info("anomaly state restored", extra={"path": str(state_path)})
            except Exception as exc:
                log.error(
                    "cannot restore anomaly state; starting fresh",
                    extra={"path": str(state_path), "error": repr(exc)},
                )

    async def __call__(self, readings: Sequence[Reading]) -> Sequence[Finding]:
        for r in readings:
            ring = self._recent.get(r.device_id)
            if ring is None:
                ring = self._recent[r.device_id] = deque(maxlen=RING_READINGS)
            ring.append(r)
        async with self._lock:
            return await asyncio.to_thread(self._process, readings)

    def _process(self, readings: Sequence[Reading]) -> list[Finding]:
        batch, skipped = to_batch(self.engine, readings)
        self.unknown_device_readings += skipped
        if len(batch.ts_ns) == 0:
            return []
        return list(self.engine.process(batch))

    def fit_window(self, finding: Finding) -> Finding:
        """The finding with its window start moved to the oldest reading held for its devices.

        The alert store keeps, with each alert, the raw readings its finding
        cites, and the ledger commits to their digest. Only readings since this
        process started, at most `RING_READINGS` per device, are held, so a
        finding whose window reaches further back (a 30-day reconciliation) has
        its stated window fitted to the evidence actually attached; its
        explanation and estimate still describe the whole period the detector
        used.
        """
        start = finding.window_start_ns
        for device in finding.devices:
            ring = self._recent.get(device)
            if ring and ring[0].ts_ns > start:
                start = ring[0].ts_ns
        if start == finding.window_start_ns:
            return finding
        end = max(finding.window_end_ns, start)
        return dataclasses.replace(finding, window_start_ns=start, window_end_ns=end)

    async def held_readings(self, finding: Finding) -> list[Reading]:
        """The readings held for the finding's devices (the alert intake selects its window)."""
        return [r for device in finding.devices for r in self._recent.get(device, ())]

    async def save_state(self) -> None:
        """Write the engine state atomically (temp file, fsync, rename)."""
        if self.state_path is None:
            return
        async with self._lock:
            blob = await asyncio.to_thread(self.engine.save_state)
        await asyncio.to_thread(_atomic_write, self.state_path, blob)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
