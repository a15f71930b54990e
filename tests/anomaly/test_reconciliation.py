import pytest

from anomaly.engine import EngineConfigError

from .synth import feeder, fuel_station, run


def _nozzle(found, dev):
    return [
        f for f in found if f.detector == "reconciliation.tank_nozzle_error" and f.devices[0] == dev
    ]


def test_honest_station_raises_nothing():
    _, found = run(fuel_station(days=3, seed=1))
    assert [f.detector for f in found] == []


def test_over_registering_nozzle_is_found_with_its_error():
    eng, found = run(fuel_station(days=3, seed=2, errors=(0, 0.03, 0, 0)))
    hits = _nozzle(found, "N2")
    assert hits, [f.explanation for f in found]
    first = hits[0]
    assert first.group == "tank1" and first.devices == ("N2", "T1")
    assert abs(first.estimate - 3.0) < 1.0 and first.ci_low < first.estimate < first.ci_high
    # no other nozzle is accused
    assert not [f for f in found if f.detector.endswith("nozzle_error") and f.devices[0] != "N2"]
    rep = eng.group_report("tank1")
    n2 = next(m for m in rep.members if m.device == "N2")
    assert abs(n2.error_pct - 3.0) < 0.3


def test_leak_is_found_and_estimated():
    eng, found = run(fuel_station(days=3, seed=3, leak_lph=6.0))
    leaks = [f for f in found if f.detector == "reconciliation.tank_leak"]
    assert leaks and leaks[0].devices == ("T1",)
    assert leaks[0].ci_low < 6.0 < leaks[0].ci_high
    assert eng.group_report("tank1").sir_result in ("fail", "inconclusive")


def test_feeder_step_ranks_the_slowed_customer_first():
    site = feeder(days=9, seed=4, errors=(0, 0, -0.25, 0), slow_from_h=3 * 24)
    _, found = run(site)
    steps = [f for f in found if f.detector == "reconciliation.feeder_balance"]
    assert steps, [f.explanation for f in found]
    assert steps[0].devices[:2] == ("F", "C3")


def test_tank_group_needs_a_gauge_and_nozzles():
    site = fuel_station(days=1)
    from anomaly.engine import Engine, GroupModel

    with pytest.raises(EngineConfigError, match="group g"):
        Engine(site.devices, [GroupModel("g", "tank", "N1", ("N2",))])
    with pytest.raises(EngineConfigError, match="unknown device 'X'"):
        Engine(site.devices, [GroupModel("g", "bulk", "X", ("N2",))])


def test_check_meter_finds_the_meter_that_drifts_from_its_reference():
    import numpy as np

    from anomaly.batch import Batch
    from anomaly.engine import DeviceModel, Engine, GroupModel

    rng = np.random.default_rng(8)
    eng = Engine(
        [DeviceModel("ref", "water", 1.0), DeviceModel("m", "water", 2.0)],
        [GroupModel("chk", "check", "ref", ("m",))],
    )
    t = np.arange(1, 6 * 96 + 1) * 900.0
    flow = rng.uniform(0.5, 2.0, len(t)) * 0.25  # m3 per 15 min
    true = np.cumsum(flow)
    error = np.where(t > 2 * 86400, 0.05, 0.0)  # m starts registering 5 % high on day 2
    found = []
    for k in range(0, len(t), 4):
        sl = slice(k, k + 4)
        n = len(t[sl])
        ts = (1_772_409_600 * 10**9 + t[sl] * 10**9).astype(np.int64)
        for dev, vol in (("ref", true), ("m", np.cumsum(flow * (1 + error)))):
            found += eng.process(
                Batch(
                    np.full(n, eng.index(dev), np.int32),
                    ts,
                    np.ones(n, bool),
                    {"volume_forward_m3": vol[sl]},
                )
            )
    hits = [f for f in found if f.detector == "reconciliation.check_meter"]
    assert hits and hits[0].devices == ("m", "ref")
    assert hits[0].estimate > 0
    assert [f.detector for f in found if f not in hits] == []
