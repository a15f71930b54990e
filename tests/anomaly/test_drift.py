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


def test_a_brief_ewma_excursion_needs_to_persist():
    rng = np.random.default_rng(5)
    base = rng.normal(0, 0.001, 200)
    blip = np.r_[base, np.full(2, 0.03), np.zeros(3)]  # two noisy hours, then back
    thr = np.array([0.01])
    quick, patient = DriftTracker(1), DriftTracker(1, ewma_persist=3)
    for tr in (quick, patient):
        feed(tr, blip[:202])
    _, ew_quick = quick.alarms(np.array([0]), thr)
    _, ew_patient = patient.alarms(np.array([0]), thr)
    assert ew_quick[0] and not ew_patient[0]
    # a real shift persists and is then reported by both
    feed(patient, np.full(5, 0.03), start=202)
    _, ew_patient = patient.alarms(np.array([0]), thr)
    assert ew_patient[0]


def test_alarms_must_be_significant_beyond_a_noisy_baseline():
    rng = np.random.default_rng(6)
    thr = np.array([0.02])
    tr = DriftTracker(1, tau_periods=30.0, min_periods=3)
    feed(tr, 0.012 + rng.normal(0, 0.002, 30))  # +1.2 %: over the 1 % decision threshold
    kw = {"detector": "drift.x", "what": "w", "period_ns": H}
    plain = DriftTracker(1, tau_periods=30.0, min_periods=3)
    feed(plain, 0.012 + rng.normal(0, 0.002, 30))
    assert plain.findings(np.array([0]), ["m"], thr, **kw)
    # the same series against a baseline known only to ±0.5 %: not beyond 1 % for sure
    assert tr.findings(np.array([0]), ["m"], thr, offset_se=0.005, beyond_z=1.0, **kw) == []
    # and an estimate that is not distinguishable from zero is not raised
    assert tr.findings(np.array([0]), ["m"], thr, min_z=50.0, **kw) == []
