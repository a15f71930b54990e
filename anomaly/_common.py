"""Shared pieces of the detector families: device context, latches, state I/O.

Failure modes handled: a latch keeps one condition per device so that a
detector reports when a condition starts (or its estimate moves
materially), not on every batch while it lasts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from anomaly._frame import Frame
from anomaly.batch import BoolArray, FloatArray, Int64Array

NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY_NS = 86_400 * NS

KINDS = ("electricity", "water", "gas", "dispenser_nozzle", "tank_gauge")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}


@dataclass(slots=True)
class Context:
    """What every detector knows about the devices (index order = engine order)."""

    ids: tuple[str, ...]
    kind: npt.NDArray[np.int8]
    mpe_pct: FloatArray
    threshold_pct: FloatArray  # mpe_pct * threshold_mpe_fraction
    export_expected: BoolArray
    last: dict[str, FloatArray]  # last valid raw value per field (NaN = never seen)
    reference: BoolArray | None = None  # True for the reference meter of a balance group

    @property
    def n(self) -> int:
        return len(self.ids)

    def mem(self, name: str) -> FloatArray:
        """The remembered last values of field `name` (created as NaN when new)."""
        arr = self.last.get(name)
        if arr is None:
            arr = self.last[name] = np.full(self.n, np.nan)
        return arr

    def is_kind(self, dev: npt.NDArray[np.intp], kind: str) -> BoolArray:
        return np.asarray(self.kind[dev] == KIND_CODE[kind])

    def remember(self, frame: Frame, names: tuple[str, ...] | list[str]) -> None:
        """Store each field's last valid value per device (call after all detectors ran)."""
        for name in names:
            if name not in frame.fields:
                continue
            mem = self.mem(name)
            idx = frame.seg_last_valid(frame.valid(name))
            has = idx >= 0
            mem[frame.seg_dev[has]] = frame.fields[name][idx[has]]


def iso(ts_ns: int) -> str:
    """UTC timestamp as `2026-03-02 14:05Z` for explanations."""
    return datetime.fromtimestamp(ts_ns / NS, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


class Latch:
    """Per-device on/off state of one condition, with the last reported estimate.

    `update_rows` evaluates per-reading on/off conditions (hysteresis: a row
    that is neither on nor off keeps the state) and returns the rows where
    the condition starts. `update_devices` does the same once per device.
    """

    def __init__(self, n: int) -> None:
        self.active = np.zeros(n, dtype=bool)
        self.reported = np.full(n, np.nan)  # estimate last reported
        self.last_ns = np.zeros(n, dtype=np.int64)  # when it was last reported

    def update_rows(self, frame: Frame, on: BoolArray, off: BoolArray) -> npt.NDArray[np.intp]:
        event = on | off
        e_idx = frame.last_idx(event)
        state = np.where(e_idx >= 0, on[np.maximum(e_idx, 0)], self.active[frame.dev])
        prev = np.empty_like(state)
        if frame.n:
            prev[1:] = state[:-1]
            prev[frame.first] = self.active[frame.seg_dev]
            self.active[frame.seg_dev] = state[frame.last]
        return np.flatnonzero(state & ~prev)

    def update_devices(
        self,
        dev: npt.NDArray[np.intp],
        on: BoolArray,
        off: BoolArray,
        *,
        estimate: FloatArray | None = None,
        material: FloatArray | float = np.inf,
        now_ns: int | None = None,
        min_gap_ns: int = DAY_NS,
    ) -> BoolArray:
        """For devices `dev` (unique), True where a finding is due.

        Due = the condition starts, or it stays on and `estimate` moved by more
        than `material` (and by more than half its last reported size) since the
        last report, at most once per `min_gap_ns` when `now_ns` is given.
        """
        was = self.active[dev]
        now = on | (was & ~off)
        due = now & ~was
        if estimate is not None:
            last = self.reported[dev]
            moved = np.abs(estimate - last) > np.maximum(material, 0.5 * np.abs(last))
            if now_ns is not None:
                moved &= now_ns - self.last_ns[dev] >= min_gap_ns
            due |= now & was & moved
            self.reported[dev] = np.where(due, estimate, self.reported[dev])
        if now_ns is not None:
            self.last_ns[dev] = np.where(due, now_ns, self.last_ns[dev])
        self.active[dev] = now
        return np.asarray(due)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.active": self.active,
            f"{prefix}.reported": self.reported,
            f"{prefix}.last_ns": self.last_ns,
        }

    def load(self, prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.active[...] = arrays[f"{prefix}.active"]
        self.reported[...] = arrays[f"{prefix}.reported"]
        self.last_ns[...] = arrays[f"{prefix}.last_ns"]


class RateLimit:
    """At most one finding per device per `holdoff_ns` for discrete events."""

    def __init__(self, n: int, holdoff_ns: int) -> None:
        self.last_ns = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self.holdoff_ns = holdoff_ns

    def first_per_device(self, frame: Frame, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Of the event `rows` (sorted), the first per device outside the hold-off."""
        if not len(rows):
            return rows
        dev = frame.dev[rows]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = dev[1:] != dev[:-1]
        cand = rows[first]
        ok = frame.ts[cand] - self.last_ns[frame.dev[cand]] >= self.holdoff_ns
        keep = cand[ok]
        self.last_ns[frame.dev[keep]] = frame.ts[keep]
        return keep


def counts_per_device(frame: Frame, rows: npt.NDArray[np.intp]) -> Int64Array:
    """How many of `rows` each device (by index) has, as an array over rows' devices."""
    return np.bincount(frame.dev[rows], minlength=int(frame.dev.max(initial=0)) + 1)


def ridge_inverse(a: FloatArray, *, floor: float) -> FloatArray | None:
    """Inverse of normal matrix `a` with a tiny ridge (relative 1e-9, plus `floor`), so a
    regressor that never moved (a nozzle that never sold) keeps a zero coefficient;
    None if it is still singular."""
    try:
        inv = np.asarray(
            np.linalg.inv(a + np.diag(1e-9 * np.abs(np.diag(a)) + floor)), dtype=np.float64
        )
    except np.linalg.LinAlgError:
        return None
    return inv
