import numpy as np

from anomaly.behaviour import SeasonalScorer, ShiftDetector

H = 3_600_000_000_000
T0 = 1_772_409_600_000_000_000


def daily(n_hours, rng, level=1.0):
    h = np.arange(n_hours)
    return level * (1 + 0.6 * np.sin(2 * np.pi * (h % 24) / 24)) * rng.lognormal(0, 0.1, n_hours)


def test_score_is_in_unit_range_low_on_normal_high_on_anomaly():
    rng = np.random.default_rng(1)
    sc = SeasonalScorer(1)
    x = daily(24 * 14, rng)
    ts = T0 + np.arange(len(x)) * H
    scores, _ = sc.update(np.zeros(len(x), np.intp), ts, x)
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.median(scores[-48:]) < 0.8
    # the same hour of day at 5x its level
    s, _ = sc.update(np.zeros(1, np.intp), np.array([ts[-1] + H]), np.array([x[-24] * 5]))
    assert s[0] > 0.99


def test_level_adapts():
    rng = np.random.default_rng(2)
    sc = SeasonalScorer(1)
    x = np.r_[daily(24 * 14, rng), daily(24 * 21, rng, level=3.0)]
    scores, _ = sc.update(np.zeros(len(x), np.intp), T0 + np.arange(len(x)) * H, x)
    assert np.mean(scores[24 * 14 : 24 * 15]) > np.mean(scores[-48:])


def test_drop_against_own_history_and_peers():
    rng = np.random.default_rng(3)
    n_dev, hours = 4, 24 * 16
    sd = ShiftDetector(n_dev)
    kind = np.zeros(n_dev, np.int8)
    ids = tuple(f"w{i}" for i in range(n_dev))
    found = []
    for k in range(hours):
        x = np.array([daily(1, rng, level=1.0 + i)[0] for i in range(n_dev)])
        x *= 0.7 if 24 * 8 <= k < 24 * 10 else 1.0  # a cold spell: everyone drops
        if k >= 24 * 12:
            x[2] *= 0.05  # a magnet on w2
        t = np.full(n_dev, T0 + k * H)
        sd.update(np.arange(n_dev), t, x)
        found += sd.findings(ids, kind, np.arange(n_dev))
    assert [f.devices for f in found] == [("w2",)]
    assert found[0].detector in ("behaviour.drop", "behaviour.zeroing")
