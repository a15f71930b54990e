"""A step in one nozzle's error: the scan (`anomaly.tankstep`) and the tank finding."""

import numpy as np
import pytest

from anomaly.engine import Engine
from anomaly.tankstep import fit_columns, scan_steps, step_column

from .synth import fuel_station, run

HOUR_NS = 3_600_000_000_000


def _level_points(seed: int, *, n: int = 1500, step: tuple[int, float, int] | None = None):
    """Level-form points of a synthetic tank: 3 nozzles, segments of 300 points.

    Per point one nozzle may sell (a transaction between idle readings); `step` =
    (nozzle, β change, point) changes that nozzle's β from that point on.
    """
    rng = np.random.default_rng(seed)
    beta = np.array([-0.001, 0.0005, 0.0])
    seg = np.repeat(np.arange(n // 300 + 1), 300)[:n].astype(np.int64)
    sells = rng.integers(0, 4, n)  # 3 = nobody
    vol = np.where(sells < 3, rng.uniform(20, 80, n), 0.0)
    dx = np.zeros((n, 3))
    dx[np.arange(n)[sells < 3], sells[sells < 3]] = vol[sells < 3]
    dh = np.full(n, 0.1)
    b = np.tile(beta, (n, 1))
    if step is not None:
        b[step[2] :, step[0]] += step[1]
    dy = (dx * b).sum(axis=1) + 0.05 * dh
    first = np.r_[True, seg[1:] != seg[:-1]]
    c = np.zeros((n, 4))
    y = np.zeros(n)
    for i in range(n):
        if not first[i]:
            c[i, :3] = c[i - 1, :3] + dx[i]
            c[i, 3] = c[i - 1, 3] + dh[i]
            y[i] = y[i - 1] + dy[i]
    y = y + rng.normal(0, 1.5, n)  # white gauge noise on the level
    return c, y, seg


def _brute(c, y, seg, k, m):
    """The step's coefficient and the drop in squared residuals, by plain least squares."""
    dummies = (seg[:, None] == np.unique(seg)[None, :]).astype(float)
    base = np.column_stack([c, dummies])
    with_u = np.column_stack([base, step_column(c[:, k], seg, m)])
    b0 = np.linalg.lstsq(base, y, rcond=None)[0]
    b1 = np.linalg.lstsq(with_u, y, rcond=None)[0]
    r0, r1 = y - base @ b0, y - with_u @ b1
    return b1[-1], float(r0 @ r0 - r1 @ r1)


def test_step_column_is_the_growth_since_the_moment_within_its_segment():
    x = np.array([0.0, 5.0, 9.0, 0.0, 4.0])
    seg = np.array([0, 0, 0, 1, 1], dtype=np.int64)
    assert step_column(x, seg, 1).tolist() == [0.0, 0.0, 4.0, 0.0, 4.0]
    assert step_column(x, seg, 3).tolist() == [0.0, 0.0, 0.0, 0.0, 4.0]


def test_scan_agrees_with_least_squares_at_its_best_moment():
    c, y, seg = _level_points(1, step=(1, -0.004, 800))
    scan = scan_steps(c, y, seg, min_side=30)
    assert scan is not None
    k = int(np.argmax(np.abs(scan.z[:3])))
    assert k == 1
    m = int(scan.at[k])
    step, ss_drop = _brute(c, y, seg, k, m)
    assert scan.step[k] == pytest.approx(step, rel=1e-6)
    assert scan.z[k] ** 2 * scan.sigma**2 == pytest.approx(ss_drop, rel=1e-6)
    assert scan.step[k] == pytest.approx(-0.004, abs=0.001)
    assert scan.first[k] <= 800 <= scan.last[k] + 5
    assert abs(m - 800) < 60


def test_no_step_leaves_every_column_insignificant_and_a_known_step_is_not_found_again():
    c, y, seg = _level_points(2)
    calm = scan_steps(c, y, seg, min_side=30)
    assert calm is not None and np.max(np.abs(calm.z)) < 4.5
    c, y, seg = _level_points(3, step=(0, 0.003, 700))
    found = scan_steps(c, y, seg, min_side=30)
    assert found is not None and abs(found.z[0]) > 7
    known = step_column(c[:, 0], seg, int(found.at[0]))[:, None]
    again = scan_steps(c, y, seg, min_side=30, known=known)
    assert again is not None and np.max(np.abs(again.z)) < 4.5


def test_too_few_points_or_a_degenerate_fit_give_no_scan():
    c, y, seg = _level_points(4, n=50)
    assert scan_steps(c, y, seg, min_side=30) is None
    assert fit_columns(c[:5], y[:5], seg[:5]) is None


def _step_findings(found):
    return [f for f in found if f.detector == "reconciliation.tank_nozzle_step"]


def test_a_nozzle_whose_error_steps_is_named_once_with_when_and_by_how_much():
    site = fuel_station(days=6, seed=11, errors=(0.001, -0.001, 0.0, 0.0005), step=(1, 0.01, 72))
    eng, found = run(site)
    steps = _step_findings(found)
    assert len(steps) == 1, [f.explanation for f in steps]
    f = steps[0]
    assert f.devices == ("N2", "T1")
    assert f.estimate == pytest.approx(1.0, abs=0.15)
    assert f.ci_low < f.estimate < f.ci_high
    start = site.streams["T1"][0][0]
    # the moment of the change: the likely range holds hour 72
    t72 = int(start) + 72 * HOUR_NS
    assert f.details["change_from_ns"] - HOUR_NS <= t72 <= f.details["change_to_ns"] + HOUR_NS
    assert f.details["error_before_pct"] == pytest.approx(-0.1, abs=0.1)
    assert f.details["error_after_pct"] == pytest.approx(0.9, abs=0.15)
    # the report's current estimate is the error since the step
    now = eng.group_report("tank1").member("N2", "current")
    assert now.error_pct == pytest.approx(0.9, abs=0.1)
    # found within a day of the change
    assert f.window_end_ns - t72 <= 24 * HOUR_NS


def test_honest_nozzles_with_steady_errors_raise_no_step():
    site = fuel_station(days=6, seed=12, errors=(0.002, -0.002, 0.001, -0.001))
    _, found = run(site)
    assert _step_findings(found) == []


def test_a_found_step_survives_a_restart_and_is_not_raised_again():
    site = fuel_station(days=4, seed=13, errors=(0.0, 0.0, 0.0, 0.0), step=(2, 0.01, 48))
    eng, found = run(site)
    assert [f.devices[0] for f in _step_findings(found)] == ["N3"]
    again = Engine.restore(site.devices, site.groups, eng.save_state())
    assert again.balance[0].steps.tolist() == eng.balance[0].steps.tolist()
    more = fuel_station(days=6, seed=13, errors=(0.0, 0.0, 0.0, 0.0), step=(2, 0.01, 48))
    _, later = run(more, engine=again)
    assert _step_findings(later) == []
