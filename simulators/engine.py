"""The serving engine: a scenario's current values on a simulated clock. Sans-I/O.

Simulated time runs `speed` times faster than real time from an anchor
(`speed` 0 freezes it; `set_time` jumps). The value a device shows at a
simulated instant is its offline sample at or before that instant, so what
the servers serve is exactly what `simulators.offline.generate` returns for
the same scenario, seed and start.

Days are generated on demand, in order, and the last two are kept. Moving
the clock backwards regenerates from day 0 (deterministic, so the values are
the same as before).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from simulators.site import DayChunk, SiteSim
from simulators.spec import DAY_S, NS_PER_S, Scenario


@dataclass(frozen=True, slots=True)
class Sample:
    """One device's values at one sample: `ok` False means the device does not answer."""

    index: int
    ts_ns: int
    fields: dict[str, float]
    ok: bool


class SimClock:
    """Simulated time (ns) running `speed` times real time from an anchor."""

    def __init__(self, at_ns: int, *, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.speed = speed
        self._anchor_ns = at_ns
        self._anchor_mono = time.monotonic()

    def now_ns(self) -> int:
        elapsed = time.monotonic() - self._anchor_mono
        return self._anchor_ns + int(elapsed * self.speed * NS_PER_S)

    def set(self, at_ns: int, *, speed: float | None = None) -> None:
        """Jump to `at_ns` (and optionally change the speed) from now on."""
        self._anchor_ns = at_ns
        self._anchor_mono = time.monotonic()
        if speed is not None:
            if speed < 0:
                raise ValueError(f"speed must be >= 0, got {speed}")
            self.speed = speed


class SimEngine:
    """Current samples of every device of `scenario` on a `SimClock`."""

    def __init__(self, scenario: Scenario, *, seed: int, clock: SimClock) -> None:
        self.scenario = scenario
        self.seed = seed
        self.clock = clock
        self._sim = SiteSim(scenario, seed=seed)
        self._days: dict[int, dict[str, DayChunk]] = {}

    def _day(self, d: int) -> dict[str, DayChunk]:
        if d in self._days:
            return self._days[d]
        if d < self._sim.next_day:  # the clock went back: start again (same values)
            self._sim = SiteSim(self.scenario, seed=self.seed)
            self._days.clear()
        while self._sim.next_day <= d:
            n = self._sim.next_day
            self._days[n] = self._sim.day(n)
            for old in [k for k in self._days if k < n - 1]:
                del self._days[old]
        return self._days[d]

    def warm(self, at_ns: int | None = None) -> None:
        """Generate every day up to `at_ns` (default: now) ahead of the first request.

        Call it in a worker thread before serving: a run that starts days
        before the current time otherwise generates them on the first poll.
        """
        at = self.clock.now_ns() if at_ns is None else at_ns
        self._day(int(max(0, at - self.scenario.start_ns) // (DAY_S * NS_PER_S)))

    def sample(self, device_id: str, at_ns: int | None = None) -> Sample:
        """The sample `device_id` shows at simulated time `at_ns` (default: now)."""
        at = self.clock.now_ns() if at_ns is None else at_ns
        spec = self.scenario.device(device_id)
        step_ns = int(self.scenario.step_for(spec) * NS_PER_S)
        rel = max(0, at - self.scenario.start_ns)
        index = rel // step_ns
        day = int(rel // (DAY_S * NS_PER_S))
        chunk = self._day(day)[device_id]
        i = int(index - day * (DAY_S * NS_PER_S // step_ns))
        i = min(max(i, 0), chunk.ts_ns.size - 1)
        fields = {k: float(v[i]) for k, v in chunk.fields.items() if np.isfinite(v[i])}
        return Sample(
            index=int(index), ts_ns=int(chunk.ts_ns[i]), fields=fields, ok=bool(chunk.ok[i])
        )
