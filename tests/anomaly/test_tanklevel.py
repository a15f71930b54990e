"""The tank's level-form fit over idle gauge readings (`anomaly.tanklevel`)."""

import numpy as np

from anomaly.tanklevel import TankLevelFit

from .synth import fuel_station, run

NS = 1_000_000_000


def test_level_fit_estimates_nozzle_errors_far_tighter_than_hourly_differences():
    eng, _ = run(fuel_station(days=4, seed=5, errors=(0.0, 0.01, 0.0, -0.004)))
    rep = eng.group_report("tank1")
    week = {m.device: m for m in rep.scales["7 d"]}
    assert abs(week["N2"].error_pct - 1.0) < 0.1
    assert abs(week["N4"].error_pct + 0.4) < 0.1
    assert abs(week["N1"].error_pct) < 0.1
    level_half = (week["N2"].ci_high_pct - week["N2"].ci_low_pct) / 2
    # the hourly regression on the same data (what the report used before)
    g = eng.balance[0]
    _, se, _ = g._solve(1)
    hourly_half = 1.96 * float(se[1]) * 100
    assert level_half < hourly_half / 2, (level_half, hourly_half)


def _feed(fit, t_s, net, tots, states, *, tank_t_s=None):
    """One batch: nozzles read at `t_s` (rows × nozzles), the gauge at `tank_t_s`."""
    tank_t = np.asarray(t_s if tank_t_s is None else tank_t_s)
    ts = (tank_t * NS).astype(np.int64)
    rows = np.column_stack([net, net, np.zeros(len(net))])
    nts = (np.asarray(t_s) * NS).astype(np.int64)
    fit.add_readings(
        ts,
        rows,
        [nts] * tots.shape[1],
        [tots[:, k] for k in range(tots.shape[1])],
        [states[:, k] for k in range(tots.shape[1])],
    )


def test_only_readings_bracketed_by_idle_nozzles_are_points():
    fit = TankLevelFit(2)
    t = np.arange(0, 3600, 60.0)
    tots = np.zeros((len(t), 2))
    states = np.zeros((len(t), 2))
    states[10:13, 0] = 1  # nozzle 1 dispensing around 600-720 s
    tots[12:, 0] = 30.0
    net = 20000.0 - tots.sum(axis=1)
    _feed(fit, t, net, tots, states, tank_t_s=t[::5])
    # gauge readings every 5 min: the one at 0 s has no nozzle reading before it, the one
    # at 600 s falls in a transaction (state 1); the other ten are points
    assert int(fit.n_points[0]) == len(t[::5]) - 2
    # a nozzle gap longer than the bracket limit makes the reading unusable
    fit2 = TankLevelFit(1)
    t2 = np.array([0.0, 60.0, 1260.0, 1320.0])
    _feed(
        fit2,
        t2,
        np.full(4, 100.0),
        np.zeros((4, 1)),
        np.zeros((4, 1)),
        tank_t_s=np.array([60.0, 700.0, 1320.0]),
    )
    assert int(fit2.n_points[0]) == 2


def test_a_delivery_starts_a_new_segment_and_state_survives_a_restart():
    from anomaly.engine import Engine

    site = fuel_station(days=3, seed=6, errors=(0.0, 0.02, 0.0, 0.0))
    eng, _ = run(site)
    g = eng.balance[0]
    assert g.level is not None and float(g.level.nseg[2]) >= 1.0
    again = Engine.restore(site.devices, site.groups, eng.save_state())
    a = eng.group_report("tank1").scales["7 d"]
    b = again.group_report("tank1").scales["7 d"]
    assert [m.error_pct for m in a] == [m.error_pct for m in b]
