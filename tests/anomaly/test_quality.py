import numpy as np

from anomaly.engine import DeviceModel, Engine

from .helpers import detectors, rows


def test_silence_raises_one_gap_while_other_devices_report():
    eng = Engine([DeviceModel("a", "water", 2.0), DeviceModel("b", "water", 2.0)])
    t = np.arange(0, 20) * 900.0
    eng.process(rows(eng, "a", t, {"flow_m3h": np.ones(20)}))
    eng.process(rows(eng, "b", t, {"flow_m3h": np.ones(20)}))
    later = np.arange(20, 60) * 900.0
    found = []
    for k in range(0, 40, 4):  # only b keeps reporting
        found += eng.process(rows(eng, "b", later[k : k + 4], {"flow_m3h": np.ones(4)}))
    gaps = [f for f in found if f.detector == "data_quality.gap"]
    assert len(gaps) == 1 and gaps[0].devices == ("a",)
    assert gaps[0].score >= 10 * 900


def test_frozen_voltage_is_reported_once():
    eng = Engine([DeviceModel("m", "electricity", 1.0)])
    t = np.arange(0, 40) * 300.0
    v = np.r_[230 + np.arange(10) * 0.1, np.full(30, 231.7)]
    found = eng.process(rows(eng, "m", t, {"voltage_l1_v": v}))
    assert detectors(found) == ["data_quality.frozen_value"]
    assert "voltage_l1_v" in found[0].explanation


def test_clock_skew_reports_start_and_material_change_only():
    eng = Engine([DeviceModel("m", "gas", 1.5)])
    found = []
    for k, skew in enumerate([0, 0, 400, 420, 450, 800, 810]):
        t = k * 900.0
        found += eng.process(rows(eng, "m", [t], {"device_clock_s": [1_772_409_600 + t + skew]}))
    skews = [f for f in found if f.detector == "data_quality.clock_skew"]
    assert [round(f.estimate) for f in skews] == [400, 800]
    assert all(f.window_end_ns > 0 for f in skews)


def test_implausible_gas_temperature_or_pressure_is_reported_once_per_excursion():
    eng = Engine([DeviceModel("g", "gas", 1.5), DeviceModel("t", "tank_gauge", 0.5)])
    t = np.arange(0, 6) * 900.0
    temp = np.array([12.0, 12.5, 85.0, 86.0, 12.0, -45.0])
    found = eng.process(rows(eng, "g", t, {"temperature_c": temp, "pressure_bar": np.full(6, 2.0)}))
    bad = [f for f in found if f.detector == "data_quality.implausible_value"]
    # two excursions: from the third reading, and again at the sixth after a plausible one
    assert len(bad) == 2
    assert bad[1].window_end_ns - bad[0].window_end_ns == 3 * 900 * 1_000_000_000
    assert "temperature_c 85 outside -30..50" in bad[0].explanation
    found = eng.process(
        rows(eng, "g", [6 * 900.0], {"pressure_bar": [0.2], "temperature_c": [-45]})
    )
    assert detectors(found) == []  # still the same excursion
    # a tank's product temperature is not held to the gas network's range
    found = eng.process(rows(eng, "t", t, {"temperature_c": temp}))
    assert "data_quality.implausible_value" not in detectors(found)
