import numpy as np

from anomaly.drift import DriftTracker

NS = 1_000_000_000
H = 3600 * NS


def feed(tr, e, start=0):
    idx = np.zeros(len(e), np.intp)
    ts = (np.arange(start, start + len(e)) * H).astype(np.int64)
    tr.update(idx, ts, np.asarray(e, float), np.ones(len(e)), np.full(len(e), 0.01))


def test_no_alarm_on_noise_and_alarm_after_a_step():
    rng = np.random.default_rng(3)
    tr = DriftTracker(1)
    thr = np.array([0.01])
    feed(tr, rng.normal(0, 0.004, 500))
    assert tr.findings(np.array([0]), ["m"], thr, detector="drift.x", what="w", period_ns=H) == []
    feed(tr, 0.012 + rng.normal(0, 0.004, 48), start=500)
    found = tr.findings(np.array([0]), ["m"], thr, detector="drift.x", what="w", period_ns=H)
    assert len(found) == 1
    f = found[0]
    assert f.estimate is not None and f.estimate > 0.3
    assert f.ci_low < f.estimate < f.ci_high
    # nothing new while the condition and its estimate stay put
    feed(tr, 0.012 + rng.normal(0, 0.004, 3), start=548)
    assert tr.findings(np.array([0]), ["m"], thr, detector="drift.x", what="w", period_ns=H) == []


def test_estimate_trend_and_projected_crossing():
    tr = DriftTracker(1, tau_periods=10_000)
    days = np.arange(0, 20 * 24) / 24
    feed(tr, 0.0002 * days)  # +0.02 pp per day
    est = tr.estimate(np.array([0]), np.array([0.01]))
    assert abs(est.trend_per_day[0] - 0.0002) < 2e-5
    # now at +0.4 %: reaches 1 % in about 30 more days
    days_left = (est.crossing_ns[0] - tr.t_last[0]) / (24 * H)
    assert 25 < days_left < 35
