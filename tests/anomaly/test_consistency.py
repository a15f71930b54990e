import numpy as np

from anomaly.consistency import gas_factor

from .helpers import detectors, one, rows


def test_amount_must_equal_price_times_volume():
    eng = one("dispenser_nozzle", 0.5)
    base = {"unit_price": [1.8] * 3, "transaction_counter": [10, 11, 12]}
    good = eng.process(
        rows(
            eng,
            "d1",
            [0, 60, 120],
            {**base, "transaction_volume_l": [20, 30, 40], "transaction_amount": [36, 54, 72]},
        )
    )
    assert good == []
    bad = eng.process(
        rows(
            eng,
            "d1",
            [180, 240],
            {
                "unit_price": [1.8] * 2,
                "transaction_counter": [13, 14],
                "transaction_volume_l": [10, 10],
                "transaction_amount": [18, 19],
            },
        )
    )
    assert detectors(bad) == ["consistency.amount_price_volume"]
    assert abs(bad[0].score - 1.0) < 1e-9


def test_totalizer_must_advance_by_the_transaction_volume():
    eng = one("dispenser_nozzle", 0.5)
    found = eng.process(
        rows(
            eng,
            "d1",
            [0, 60, 120, 180],
            {
                "transaction_counter": [1, 2, 3, 4],
                "state": [0, 2, 2, 0],
                "totalizer_volume_l": [1000, 1030, 1070, 1100],
                "transaction_volume_l": [20, 30, 40, 25],
            },
        )
    )
    assert detectors(found) == ["consistency.totalizer_transaction"]
    assert "off by +5.00 L" in found[0].explanation


def test_totalizer_advance_while_idle_is_unrecorded_dispensing():
    eng = one("dispenser_nozzle", 0.5)
    found = eng.process(
        rows(
            eng,
            "d1",
            [0, 60],
            {"transaction_counter": [5, 5], "state": [0, 0], "totalizer_volume_l": [1000, 1012]},
        )
    )
    assert detectors(found) == ["consistency.unrecorded_dispensing"]


def test_gas_conversion_recomputed_from_pressure_and_temperature():
    eng = one("gas", 1.5)
    p = np.array([2.0, 2.0, 2.0, 2.0])
    t = np.array([10.0, 10.0, 10.0, 10.0])
    good = gas_factor(p, t, np.full(4, 288.15))
    c = good * np.array([1, 1, 1.03, 1.03])  # the corrector uses a wrong temperature
    found = eng.process(
        rows(
            eng,
            "d1",
            [0, 900, 1800, 2700],
            {"pressure_bar": p, "temperature_c": t, "conversion_factor": c},
        )
    )
    assert detectors(found) == ["consistency.gas_conversion"]
    assert abs(found[0].estimate - 3.0) < 0.01


def test_stopped_register_under_load():
    eng = one("electricity")
    t = np.arange(0, 3 * 3600 + 1, 300.0)
    e = np.r_[np.linspace(100, 102, 13), np.full(len(t) - 13, 102.0)]
    found = eng.process(
        rows(eng, "d1", t, {"power_total_w": np.full(len(t), 2000.0), "energy_import_kwh": e})
    )
    assert "consistency.register_vs_power" in detectors(found)
    f = next(f for f in found if f.detector == "consistency.register_vs_power")
    assert "stopped" in f.explanation
