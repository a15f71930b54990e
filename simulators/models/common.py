"""Shared pieces of the device models: the day context, the day output, noise and profiles."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from simulators.spec import DAY_S, Condition, DeviceSpec, Label

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]


def rng_for(seed: int, name: str, day: int, stream: int = 0) -> np.random.Generator:
    """The random generator of (`seed`, `name`, `day`, `stream`): stable across runs."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode()), day + 1, stream])


@dataclass(frozen=True, slots=True)
class DayContext:
    """One day of one device: its sample times and the run's time base.

    `t_rel_s` are sample times in seconds since the run start; `start_s` is
    the run start in unix seconds (so `start_s + t_rel_s` is wall time).
    """

    day: int
    seed: int
    start_s: float
    t_rel_s: F64
    step_s: float

    @property
    def t_abs_s(self) -> F64:
        return self.start_s + self.t_rel_s

    @property
    def hour(self) -> F64:
        """Hour of day (UTC, fractional) of every sample."""
        return np.asarray((self.t_abs_s % DAY_S) / 3600.0, dtype=np.float64)

    @property
    def weekday(self) -> int:
        """0 = Monday, of this day."""
        return int(((self.start_s + self.day * DAY_S) // DAY_S + 3) % 7)

    @property
    def day_of_year(self) -> float:
        return float(((self.start_s + self.day * DAY_S) / DAY_S) % 365.25)

    @property
    def day_start_rel_s(self) -> float:
        return float(self.day * DAY_S)

    def rng(self, name: str, stream: int = 0) -> np.random.Generator:
        return rng_for(self.seed, name, self.day, stream)


@dataclass(slots=True)
class DayOut:
    """What a model produced for one day.

    `fields` are the values the device reports (canonical names), one per
    sample. `true` holds the physical truth at the same samples (what a
    reference meter upstream sees); `events` holds per-event arrays (the
    nozzles' transactions) for references that need finer than samples.
    """

    fields: dict[str, F64]
    true: dict[str, F64] = field(default_factory=dict)
    events: dict[str, F64] = field(default_factory=dict)


class Model(Protocol):
    """A device model: generates day after day, carrying its registers over."""

    spec: DeviceSpec

    def day(self, ctx: DayContext, members: list[tuple[DeviceSpec, DayOut]]) -> DayOut:
        """Generate day `ctx.day`; `members` are the outputs of a reference's group members."""
        ...


def ar1(rng: np.random.Generator, n: int, *, phi: float, sigma: float) -> F64:
    """Stationary AR(1) noise with marginal standard deviation `sigma`."""
    e = rng.normal(0.0, sigma * np.sqrt(1.0 - phi * phi), n)
    e[0] = rng.normal(0.0, sigma)
    out = lfilter([1.0], [1.0, -phi], e)
    return np.asarray(out, dtype=np.float64)


def bump(hour: F64, centre: float, width: float) -> F64:
    return np.asarray(np.exp(-0.5 * ((hour - centre) / width) ** 2), dtype=np.float64)


def window(cond: Condition, t_rel_s: F64) -> BoolArr:
    """Which samples `cond` is active on."""
    end = np.inf if cond.end_s is None else cond.end_s
    return np.asarray((t_rel_s >= cond.start_s) & (t_rel_s < end), dtype=np.bool_)


def ramp(cond: Condition, t_rel_s: F64, *, default_days: float) -> F64:
    """0 before `cond` starts, rising linearly to 1 over `ramp_days`, then 1 (and 0 after end)."""
    ramp_s = cond.param("ramp_days", default_days) * DAY_S
    frac = np.clip((t_rel_s - cond.start_s) / max(ramp_s, 1.0), 0.0, 1.0)
    return np.where(window(cond, t_rel_s), frac, 0.0)


def drift_error(conds: tuple[Condition, ...], t_rel_s: F64) -> F64:
    """Extra metrological error (fraction) from `slow_drift` conditions at each time."""
    err = np.zeros_like(t_rel_s)
    for c in conds:
        if c.label is Label.SLOW_DRIFT:
            err += (c.magnitude or 0.0) * ramp(c, t_rel_s, default_days=90.0)
    return err


def of(conds: tuple[Condition, ...], *labels: Label) -> list[Condition]:
    return [c for c in conds if c.label in labels]


# --- site-wide weather and grid: the same for every device of a run --------------------

_GRID_STEP_S = 60.0


@lru_cache(maxsize=16)  # every meter of a site reads the same day's grid; never mutated
def _site_grid(seed: int, day: int) -> tuple[F64, F64, F64]:
    """Per-minute (time, frequency Hz, voltage offset V) of one day; shared by all meters."""
    rng = rng_for(seed, "site:grid", day)
    n = int(DAY_S / _GRID_STEP_S) + 1
    t = day * DAY_S + np.arange(n, dtype=np.float64) * _GRID_STEP_S
    freq = 50.0 + ar1(rng, n, phi=0.97, sigma=0.02)
    volt = ar1(rng, n, phi=0.99, sigma=1.2)
    return t, freq, volt


def grid_at(seed: int, day: int, t_rel_s: F64) -> tuple[F64, F64]:
    """Grid frequency (Hz) and a common voltage offset (V) at `t_rel_s` of `day`."""
    t, freq, volt = _site_grid(seed, day)
    return np.interp(t_rel_s, t, freq), np.interp(t_rel_s, t, volt)


def ambient_c(seed: int, day: int, start_s: float, t_rel_s: F64) -> F64:
    """Outdoor temperature (degC): seasonal cycle, daily cycle, a random day offset."""
    rng = rng_for(seed, "site:weather", day)
    offset = rng.normal(0.0, 2.5)
    t_abs = start_s + t_rel_s
    doy = (t_abs / DAY_S) % 365.25
    seasonal = 10.0 - 9.0 * np.cos(2 * np.pi * (doy - 15.0) / 365.25)
    hour = (t_abs % DAY_S) / 3600.0
    daily = -4.0 * np.cos(2 * np.pi * (hour - 3.0) / 24.0)
    return np.asarray(seasonal + daily + offset, dtype=np.float64)


class MeterModel:
    """What every meter model keeps: its spec, the conditions injected into it, the
    run's seed, its role in a balance group (customer, or the group's feeder, bulk
    or check meter) and, for a reference, the group's technical loss in percent.
    Subclasses set their registers in `_start`."""

    def __init__(
        self,
        spec: DeviceSpec,
        conditions: tuple[Condition, ...],
        *,
        seed: int,
        role: str = "customer",
        loss_pct: float = 0.0,
    ) -> None:
        self.spec = spec
        self.conditions = conditions
        self.seed = seed
        self.role = role
        self.loss_pct = loss_pct
        self._start(rng_for(seed, spec.id, -1))

    def _start(self, rng: np.random.Generator) -> None:
        """Set the model's registers and running state (its own random draws from `rng`)."""
