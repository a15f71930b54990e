import numpy as np

from anomaly.integrity import rollover_width

from .helpers import detectors, one, rows


def test_rollback_is_found_on_the_first_reading_that_shows_it():
    eng = one("dispenser_nozzle", 0.5)
    assert eng.process(rows(eng, "d1", [0, 60, 120], {"totalizer_volume_l": [100, 110, 120]})) == []
    found = eng.process(rows(eng, "d1", [180, 240], {"totalizer_volume_l": [90, 95]}))
    assert detectors(found) == ["integrity.counter_rollback"]
    f = found[0]
    assert f.window_end_ns == rows(eng, "d1", [180], {}).ts_ns[0]
    assert f.score == 30.0 and f.severity == "critical"


def test_rollover_at_register_width_is_not_a_rollback():
    eng = one("electricity")
    found = eng.process(
        rows(eng, "d1", [0, 300, 600], {"energy_import_kwh": [99_999.5, 99_999.9, 0.3]})
    )
    assert found == []
    assert rollover_width(np.array([65535.0]), np.array([2.0]))[0] == 65536.0
    assert np.isnan(rollover_width(np.array([60000.0]), np.array([2.0]))[0])


def test_first_reading_of_a_device_raises_no_counter_event():
    eng = one("electricity")
    assert eng.process(rows(eng, "d1", [0], {"magnet_events": [7], "event_counter": [3]})) == []


def test_tamper_and_parameter_events_and_their_rate_limit():
    eng = one("dispenser_nozzle", 0.5)
    eng.process(
        rows(eng, "d1", [0], {"parameter_change_counter": [2], "calibration_k_factor": [100.0]})
    )
    found = eng.process(
        rows(
            eng,
            "d1",
            [60, 120, 180],
            {"parameter_change_counter": [3, 4, 4], "calibration_k_factor": [100.0, 100.5, 100.5]},
        )
    )
    # one finding per cause, the counter's carries both increments
    assert sorted(detectors(found)) == ["integrity.parameter_change"] * 2
    counter = next(f for f in found if "audit" in f.explanation)
    assert counter.score == 2.0


def test_reverse_energy_only_for_import_only_customers():
    fields = {"energy_export_kwh": [5.0, 5.0, 5.2]}
    eng = one("electricity")
    assert detectors(eng.process(rows(eng, "d1", [0, 300, 600], fields))) == [
        "integrity.reverse_energy"
    ]
    prosumer = one("electricity", export_expected=True)
    assert prosumer.process(rows(prosumer, "d1", [0, 300, 600], fields)) == []


def test_voltage_loss_is_reported_once_while_it_lasts_and_again_after_recovery():
    eng = one("electricity")
    u = [230, 230, 40, 40, 40, 231, 40]
    fields = {
        "voltage_l1_v": u,
        "voltage_l2_v": [230] * 7,
        "voltage_l3_v": [230] * 7,
        "current_l1_a": [5] * 7,
        "current_l2_a": [5] * 7,
        "current_l3_a": [5] * 7,
    }
    found = eng.process(rows(eng, "d1", [0, 60, 120, 180, 240, 300, 360], fields))
    assert detectors(found) == ["integrity.voltage_loss"] * 2
    assert "L1" in found[0].explanation


def test_reverse_flow_register_rise_on_water_meter():
    eng = one("water", 2.0)
    found = eng.process(rows(eng, "d1", [0, 900], {"volume_reverse_m3": [1.0, 1.05]}))
    assert detectors(found) == ["integrity.reverse_flow"]


def test_reverse_power_low_power_factor_and_continuous_flow():
    eng = one("electricity")
    t = [0, 300, 600, 900]
    found = eng.process(rows(eng, "d1", t, {"power_total_w": [500, -300, -400, 200]}))
    assert detectors(found) == ["integrity.reverse_energy"]
    eng = one("electricity")
    t = list(range(0, 2 * 3600 + 1, 600))
    found = eng.process(
        rows(eng, "d1", t, {"power_total_w": [800] * len(t), "power_factor": [0.2] * len(t)})
    )
    assert detectors(found) == ["integrity.low_power_factor"]
    assert found[0].window_end_ns - found[0].window_start_ns >= 3600 * 10**9
    eng = one("water", 2.0)
    t = list(range(0, 30 * 3600, 900))
    q = [0.01] * len(t)
    found = eng.process(rows(eng, "d1", t, {"flow_m3h": q}))
    assert detectors(found) == ["integrity.continuous_flow"]


def test_open_phase_needs_60_s_and_another_live_phase():
    eng = one("electricity")
    t = [0, 30, 60, 90, 120, 150]
    fields = {
        "voltage_l1_v": [230, 20, 20, 20, 230, 230],
        "voltage_l2_v": [230] * 6,
        "voltage_l3_v": [230] * 6,
        "current_l1_a": [2, 0, 0, 0, 2, 2],
        "current_l2_a": [3] * 6,
        "current_l3_a": [3] * 6,
    }
    found = eng.process(rows(eng, "d1", t, fields))
    # 30 s..90 s is 60 s of an open L1; it clears at 120 s
    assert detectors(found) == ["integrity.open_phase"]
    assert "L1" in found[0].explanation
    assert found[0].window_start_ns < found[0].window_end_ns
    # a full outage (no phase live) and a 30 s dip are not an open phase
    eng = one("electricity")
    dark = {k: [0.0] * 4 for k in fields}
    dark["voltage_l1_v"] = [230, 0, 0, 0]
    assert "integrity.open_phase" not in detectors(eng.process(rows(eng, "d1", t[:4], dark)))
    eng = one("electricity")
    short = {k: v[:3] for k, v in fields.items()}
    assert detectors(eng.process(rows(eng, "d1", t[:3], short))) == []
