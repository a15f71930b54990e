"""Apparent flow rate of each nozzle against its own history and its sister nozzles.

A pulse-adding chip or an edited K-factor makes a nozzle register more
litres per minute than the pump delivers: the flow rate it reports rises by
the cheat factor at the same pump speed (DOMAIN.md section 2). Per nozzle
and day, the median of the flow readings taken while it dispenses (state 1)
is compared with the nozzle's own baseline (its first `BASE_DAYS` days with
sales) and, to take out what moves every nozzle of the tank alike (product
temperature and viscosity, a pump's supply), with the median of its sister
nozzles' latest daily ratios:

    x_day = log(median_day / baseline) - median over sisters of theirs

Each day's x has a standard error from the day's own scatter (the median's
1.2533 · 1.4826 · MAD / sqrt(n)) and the baseline's; when the days scatter
more than that (habits that change from day to day), the moving range of x
takes over. A nozzle is flagged when the exponentially weighted mean of x
over about `TAU_DAYS` days is significant (z ≥ `Z_FLOW`) and above the
decision threshold (half the nozzle's threshold); it clears below z 2. A
transaction's flow scatters by several percent, so a day resolves a nozzle
to about 1 %: this corroborates gross cheats (a few percent) within days;
the tank balance (`anomaly.tankstep`) resolves tenths of a percent.

Failure modes handled: readings while idle or with a flow of zero are not
flow samples; a day with fewer than `MIN_READINGS` samples is skipped; more
than `BUFFER` samples in a day keep the latest `BUFFER`; a nozzle whose
sisters have no recent day is judged against its own history only; readings
older than the nozzle's current day are ignored.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from anomaly._common import DAY_NS
from anomaly.batch import FloatArray

BUFFER = 512  # flow samples kept per nozzle and day
MIN_READINGS = 30  # samples for a day's median to count
BASE_DAYS = 3  # days with sales that make a nozzle's baseline
TAU_DAYS = 7.0  # memory of the weighted mean of the daily residuals
Z_FLOW = 4.5
_MEDIAN_SE = 1.2533 * 1.4826  # se of a median = this · MAD / sqrt(n) (normal samples)


class NozzleFlows:
    """Daily flow medians of the J nozzles of one tank, as residual series."""

    def __init__(self, j: int) -> None:
        self.j = j
        self.buf = np.full((j, BUFFER), np.nan)
        self.buf_n = np.zeros(j, dtype=np.int64)  # samples today (may exceed BUFFER)
        self.day = np.full(j, -1, dtype=np.int64)  # the day being collected
        self.base = np.zeros((j, 3))  # Σ log(daily median), Σ its variance, days
        self.last_r = np.full(j, np.nan)  # latest daily log ratio to the baseline
        self.last_r_var = np.full(j, np.nan)
        self.last_r_day = np.full(j, -1, dtype=np.int64)
        self.ew = np.zeros((j, 2))  # Σ w, Σ w·x (w = 1/variance, forgetting per day)
        self.ew_day = np.full(j, -1, dtype=np.int64)
        self.mr = np.full(j, np.nan)  # moving range of x between days
        self.last_x = np.full(j, np.nan)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}

    def add(
        self, ts: list[npt.NDArray[np.int64]], flow: list[FloatArray], state: list[FloatArray]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], FloatArray]:
        """Add each nozzle's readings (time order); return the days completed after the
        baseline: (nozzle, day end ns, residual x)."""
        closed: list[tuple[int, int]] = []
        for k in range(self.j):
            ok = (state[k] == 1) & np.isfinite(flow[k]) & (flow[k] > 0)
            t, f = ts[k][ok], flow[k][ok]
            days = t // DAY_NS
            keep = days >= self.day[k]
            t, f, days = t[keep], f[keep], days[keep]
            for d in np.unique(days):
                if d > self.day[k]:
                    if self.day[k] >= 0 and self._close(k):
                        closed.append((k, int(self.day[k])))
                    self.day[k] = d
                    self.buf_n[k] = 0
                    self.buf[k] = np.nan
                vals = f[days == d]
                slots = (self.buf_n[k] + np.arange(len(vals))) % BUFFER
                self.buf[k, slots] = vals
                self.buf_n[k] += len(vals)
        nozzle = np.array([k for k, _ in closed], dtype=np.intp)
        day = np.array([d for _, d in closed], dtype=np.int64)
        x = np.full(len(closed), np.nan)
        for i, (k, d) in enumerate(closed):
            sisters = [
                s
                for s in range(self.j)
                if s != k and self.last_r_day[s] >= d - 1 and np.isfinite(self.last_r[s])
            ]
            var = float(self.last_r_var[k])
            if sisters:
                peer = float(np.median(self.last_r[sisters]))
                var += 1.57 * float(np.mean(self.last_r_var[sisters])) / len(sisters)
            else:
                peer = 0.0
            x[i] = self.last_r[k] - peer
            self._accumulate(k, d, float(x[i]), var)
        return nozzle, (day + 1) * DAY_NS, x

    def _accumulate(self, k: int, day: int, x: float, var: float) -> None:
        # the days' own scatter (a robust moving range that starts from the model's, so one
        # jump, the step itself, moves it by little) takes over when it is larger
        if not np.isfinite(self.mr[k]):
            self.mr[k] = 1.128 * np.sqrt(var)
        elif np.isfinite(self.last_x[k]):
            step = abs(x - self.last_x[k])
            self.mr[k] += 0.2 * (min(step, 2.0 * self.mr[k]) - self.mr[k])
        self.last_x[k] = x
        var = max(var, (float(self.mr[k]) / 1.128) ** 2)
        gap = day - self.ew_day[k] if self.ew_day[k] >= 0 else 1
        f = float(np.exp(-gap / TAU_DAYS))
        self.ew[k] = f * self.ew[k] + (1.0 / var, x / var)
        self.ew_day[k] = day

    def decision(self) -> tuple[FloatArray, FloatArray]:
        """Per nozzle: (weighted mean of x, its standard error); se = inf before any day."""
        w = self.ew[:, 0]
        have = w > 0
        est = np.where(have, self.ew[:, 1] / np.where(have, w, 1.0), 0.0)
        se = np.where(have, 1.0 / np.sqrt(np.where(have, w, 1.0)), np.inf)
        return est, se

    def _close(self, k: int) -> bool:
        """Finish nozzle k's day: True if it counted (its ratio is in `last_r`)."""
        n = int(min(self.buf_n[k], BUFFER))
        if n < MIN_READINGS:
            return False
        logs = np.log(self.buf[k, :n])
        med = float(np.median(logs))
        mad = float(np.median(np.abs(logs - med)))
        var = (_MEDIAN_SE * mad) ** 2 / n + 1e-10
        if self.base[k, 2] < BASE_DAYS:
            self.base[k] += (med, var, 1.0)
            return False
        days = self.base[k, 2]
        self.last_r[k] = med - self.base[k, 0] / days
        self.last_r_var[k] = var + self.base[k, 1] / days**2
        self.last_r_day[k] = self.day[k]
        return True
