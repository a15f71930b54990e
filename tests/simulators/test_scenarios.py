"""Every catalogue scenario leaves its signature in the generated data.

Most checks compare a scenario with the honest run of the same seed: the
random draws are identical, so the difference isolates the injected effect.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simulators.catalogue import scenario_names
from simulators.offline import OfflineRun, generate

SEED = 7
DAYS = 8
DAY_NS = 86_400 * 10**9
BETA = 0.00095  # the standard tank's expansion coefficient

_cache: dict[tuple[str, int, tuple[tuple[str, float], ...]], OfflineRun] = {}


def run(name: str, days: int = DAYS, **step: float) -> OfflineRun:
    key = (name, days, tuple(sorted(step.items())))
    if key not in _cache:
        _cache[key] = generate(name, seed=SEED, days=days, step_s=step or None)
    return _cache[key]


def at(r: OfflineRun, dev: str, field: str, day: float) -> float:
    s = r.devices[dev]
    t = s.ts_ns[0] + int(day * DAY_NS)
    ok = np.isfinite(s.fields[field])
    return float(np.interp(t, s.ts_ns[ok], s.fields[field][ok]))


def inc(r: OfflineRun, dev: str, field: str, d0: float, d1: float) -> float:
    return at(r, dev, field, d1) - at(r, dev, field, d0)


def tank_gain(r: OfflineRun, d0: float, d1: float) -> tuple[float, dict[int, float]]:
    """Actual minus book net stock of tank-1 over [d0, d1], and each nozzle's sales."""
    sales = {i: inc(r, f"nozzle-{i}", "totalizer_volume_l", d0, d1) for i in range(1, 5)}
    tk = r.devices["tank-1"]
    lo, hi = tk.ts_ns[0] + int(d0 * DAY_NS), tk.ts_ns[0] + int(d1 * DAY_NS)
    temp = float(np.mean(tk.fields["temperature_c"][(tk.ts_ns >= lo) & (tk.ts_ns <= hi)]))
    book = (
        at(r, "tank-1", "net_volume_l", d0)
        + inc(r, "tank-1", "deliveries_net_l", d0, d1)
        - sum(sales.values()) / (1 + BETA * (temp - 15.0))
    )
    return at(r, "tank-1", "net_volume_l", d1) - book, sales


def window(r: OfflineRun, dev: str, d0: float, d1: float) -> np.ndarray:
    s = r.devices[dev]
    return (s.ts_ns >= s.ts_ns[0] + int(d0 * DAY_NS)) & (s.ts_ns < s.ts_ns[0] + int(d1 * DAY_NS))


# --- fuel --------------------------------------------------------------------------------


def test_honest_tank_balances_within_noise() -> None:
    gain, sales = tank_gain(run("honest"), 1.0, DAYS - 0.01)
    assert abs(gain) < 0.002 * sum(sales.values())


@pytest.mark.parametrize(
    ("name", "pct"),
    [
        ("over_registration_0_15pct", 0.15),
        ("over_registration_0_3pct", 0.3),
        ("over_registration_0_5pct", 0.5),
        ("over_registration_1pct", 1.0),
        ("over_registration_3pct", 3.0),
    ],
)
def test_over_registration_shows_as_tank_gain(name: str, pct: float) -> None:
    d0, d1 = 3.0, DAYS - 0.01
    gain, sales = tank_gain(run(name), d0, d1)
    honest_gain, _ = tank_gain(run("honest"), d0, d1)
    effect = (gain - honest_gain) / sales[2]
    assert effect == pytest.approx(pct / 100.0, rel=0.1, abs=0.0003)
    if pct >= 1.0:  # large enough to see without the honest twin
        assert gain / sales[2] == pytest.approx(pct / 100.0, rel=0.25)
    # nothing before the start
    before, _ = tank_gain(run(name), 0.5, 2.99)
    honest_before, _ = tank_gain(run("honest"), 0.5, 2.99)
    assert before == pytest.approx(honest_before, abs=1.0)


def test_intermittent_over_registration() -> None:
    d0, d1 = 3.0, DAYS - 0.01
    gain, sales = tank_gain(run("intermittent_over_registration"), d0, d1)
    honest_gain, _ = tank_gain(run("honest"), d0, d1)
    # 3 % on about 30 % of the transactions
    assert (gain - honest_gain) / sales[3] == pytest.approx(0.009, rel=0.3)
    # the apparent flow rate during dispensing rises by the average cheat factor
    r, h = run("intermittent_over_registration"), run("honest")
    s, hs = r.devices["nozzle-3"].fields, h.devices["nozzle-3"].fields
    after_r = (s["state"] == 1) & window(r, "nozzle-3", 3.0, DAYS)
    after_h = (hs["state"] == 1) & window(h, "nozzle-3", 3.0, DAYS)
    ratio = s["flow_rate_lpm"][after_r].mean() / hs["flow_rate_lpm"][after_h].mean()
    assert ratio == pytest.approx(1.009, abs=0.005)


def test_calibration_change() -> None:
    r = run("calibration_change")
    n1 = r.devices["nozzle-1"].fields
    k_before, k_after = (
        at(r, "nozzle-1", "calibration_k_factor", 3.9),
        n1["calibration_k_factor"][-1],
    )
    assert k_before / k_after == pytest.approx(1.01)
    assert inc(r, "nozzle-1", "parameter_change_counter", 3.9, 4.1) == 1
    assert inc(r, "nozzle-1", "parameter_change_counter", 0, 3.9) == 0
    gain, sales = tank_gain(r, 4.0, DAYS - 0.01)
    honest_gain, _ = tank_gain(run("honest"), 4.0, DAYS - 0.01)
    assert (gain - honest_gain) / sales[1] == pytest.approx(0.01, rel=0.1)


def test_totalizer_rollback() -> None:
    r = run("totalizer_rollback")
    tot = r.devices["nozzle-4"].fields["totalizer_volume_l"]
    steps = np.diff(tot)
    assert (steps < 0).sum() == 1
    drop = steps[steps < 0][0]
    assert -5000.0 - 200.0 < drop < -5000.0 + 1.0  # 5000 L back, minus what flowed meanwhile
    where = r.devices["nozzle-4"].ts_ns[1:][steps < 0][0] - r.devices["nozzle-4"].ts_ns[0]
    assert where == pytest.approx(4.5 * DAY_NS, abs=60 * 10**9)
    assert np.all(np.diff(r.devices["nozzle-4"].fields["transaction_counter"]) >= 0)


def _completed_transactions(r: OfflineRun, dev: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, totalizer increase, displayed volume) of each completed transaction (10 s steps)."""
    f = r.devices[dev].fields
    done = np.flatnonzero(np.diff(f["transaction_counter"]) == 1) + 1
    tot_inc = np.diff(f["totalizer_volume_l"][done])
    shown = f["transaction_volume_l"][done][1:]
    return r.devices[dev].ts_ns[done][1:], tot_inc, shown


def test_transaction_volume_not_matching_totalizer() -> None:
    r = run("transaction_mismatch", dispenser_nozzle=10.0)
    ts, tot_inc, shown = _completed_transactions(r, "nozzle-2")
    after = ts >= ts[0] - (ts[0] - r.devices["nozzle-2"].ts_ns[0]) + 3 * DAY_NS
    mismatch = ~np.isclose(tot_inc, shown, atol=0.011)
    assert not mismatch[~after].any()
    frac = mismatch[after].mean()
    assert 0.12 < frac < 0.3
    short = 1.0 - shown[after][mismatch[after]] / tot_inc[after][mismatch[after]]
    assert np.median(short) == pytest.approx(0.05, abs=0.005)
    # an honest nozzle matches throughout
    _, h_inc, h_shown = _completed_transactions(r, "nozzle-1")
    assert np.isclose(h_inc, h_shown, atol=0.011).all()


def test_tank_leak() -> None:
    d0, d1 = 3.0, DAYS - 0.01
    gain, _ = tank_gain(run("tank_leak"), d0, d1)
    honest_gain, _ = tank_gain(run("honest"), d0, d1)
    assert gain - honest_gain == pytest.approx(-3.0 * 24 * (d1 - d0), rel=0.05)


# --- electricity -------------------------------------------------------------------------


def feeder_loss(r: OfflineRun, d0: float, d1: float) -> float:
    fe = inc(r, "feeder-1", "energy_import_kwh", d0, d1)
    cs = sum(inc(r, f"meter-{i}", "energy_import_kwh", d0, d1) for i in range(1, 5))
    return (fe - cs) / fe


def test_honest_feeder_loss_is_the_technical_loss() -> None:
    assert feeder_loss(run("honest"), 0, DAYS - 0.01) == pytest.approx(0.04, abs=0.01)


def test_ct_bypass() -> None:
    r = run("ct_bypass")
    f = r.devices["meter-2"].fields
    share = f["current_l1_a"] / (f["current_l2_a"] + f["current_l3_a"])
    before = np.median(share[window(r, "meter-2", 0, 3)])
    after = np.median(share[window(r, "meter-2", 3, DAYS)])
    assert after < 0.2 * before
    # the neutral still carries the real (unbalanced) currents
    nb = np.median(f["current_n_a"][window(r, "meter-2", 3, DAYS)])
    na = np.median(f["current_n_a"][window(r, "meter-2", 0, 3)])
    assert nb > 0.9 * na
    assert feeder_loss(r, 3, DAYS - 0.01) > feeder_loss(r, 0, 3) + 0.03


def test_reverse_energy() -> None:
    r = run("reverse_energy")
    assert inc(r, "meter-3", "energy_export_kwh", 0, 3) == 0
    assert inc(r, "meter-3", "energy_export_kwh", 3.01, DAYS - 0.01) > 5.0
    assert np.all(r.devices["meter-3"].fields["power_total_w"][window(r, "meter-3", 3, DAYS)] < 0)
    assert inc(r, "meter-3", "energy_import_kwh", 3.01, DAYS - 0.01) == 0


def test_voltage_loss_under_load() -> None:
    r = run("voltage_loss")
    f = r.devices["meter-1"].fields
    w = window(r, "meter-1", 3, 6)
    assert np.all(f["voltage_l2_v"][w] < 0.78 * 230)
    assert np.all(f["current_l2_a"][w] > 0.005 * 10)
    assert np.all(f["voltage_l2_v"][~w] > 0.85 * 230)


def test_register_slowed_against_power() -> None:
    r = run("register_slowed")
    s = r.devices["meter-4"]
    e, p = s.fields["energy_import_kwh"], s.fields["power_total_w"]
    day = 288  # samples of 300 s

    def ratio(d: int) -> float:
        sl = slice(d * day, (d + 1) * day)
        return float((e[(d + 1) * day] - e[d * day]) / (p[sl].sum() * 300 / 3.6e6))

    assert ratio(1) == pytest.approx(1.0, abs=1e-6)
    assert ratio(5) == pytest.approx(0.7, abs=1e-6)


def test_magnet_event() -> None:
    r, h = run("magnet_event"), run("honest")
    assert inc(r, "meter-2", "magnet_events", 2.9, 3.1) == 1
    assert inc(r, "meter-2", "magnet_events", 3.1, DAYS - 0.01) == 0
    under = inc(r, "meter-2", "energy_import_kwh", 3.01, 4.99)
    honest = inc(h, "meter-2", "energy_import_kwh", 3.01, 4.99)
    assert under / honest == pytest.approx(0.5, abs=0.01)


def test_cover_event() -> None:
    r = run("cover_event")
    s = r.devices["meter-1"]
    step = np.flatnonzero(np.diff(s.fields["cover_events"]))
    assert step.size == 1
    assert s.ts_ns[step[0] + 1] - s.ts_ns[0] == pytest.approx(3.25 * DAY_NS, abs=300 * 10**9)


# --- water and gas ---------------------------------------------------------------------------


def test_water_reverse_flow() -> None:
    r = run("water_reverse_flow")
    assert inc(r, "water-2", "volume_reverse_m3", 0, 2.99) == 0
    assert inc(r, "water-2", "volume_reverse_m3", 3, DAYS - 0.01) > 1.0
    f = r.devices["water-2"].fields
    w = window(r, "water-2", 3, DAYS)
    assert f["reverse_flow_flag"][w].max() == 1
    assert f["reverse_flow_flag"][~w].max() == 0
    assert np.all(f["flow_m3h"][w] <= 0)


def bulk_residual(r: OfflineRun, d0: float, d1: float) -> float:
    b = inc(r, "bulk-water", "volume_forward_m3", d0, d1)
    return b - sum(inc(r, f"water-{i}", "volume_forward_m3", d0, d1) for i in range(1, 4))


def test_magnet_consumption_drop() -> None:
    r, h = run("magnet_consumption_drop"), run("honest")
    before = inc(r, "water-3", "volume_forward_m3", 0, 3) / 3
    after = inc(r, "water-3", "volume_forward_m3", 3, DAYS - 0.01) / (DAYS - 3)
    assert after < 0.1 * before
    missing = inc(h, "water-3", "volume_forward_m3", 3, DAYS - 0.01) * 0.95
    extra = bulk_residual(r, 3, DAYS - 0.01) - bulk_residual(h, 3, DAYS - 0.01)
    assert extra == pytest.approx(missing, rel=0.02)


def test_stuck_register() -> None:
    r, h = run("stuck_register"), run("honest")
    f = r.devices["water-1"].fields
    w = window(r, "water-1", 3.01, DAYS)
    assert np.ptp(f["volume_forward_m3"][w]) == 0
    assert inc(r, "water-1", "volume_forward_m3", 0, 3) > 0.5
    # the water still flows: the district balance sees it
    assert bulk_residual(r, 3, DAYS - 0.01) > bulk_residual(h, 3, DAYS - 0.01) + 1.0


def test_gas_temperature_drift() -> None:
    r, h = run("gas_temperature_drift"), run("honest")
    f, g = r.devices["gas-1"].fields, h.devices["gas-1"].fields
    err = f["temperature_c"] - g["temperature_c"]
    w = window(r, "gas-1", 0, 2)
    assert np.all(err[w] == 0)
    assert err[-1] == pytest.approx(10.0 * (DAYS - 2) / 30.0, abs=0.05)
    # Vb per Vm falls by T_true/T_reported; the reported factor stays self-consistent
    dvb = inc(r, "gas-1", "volume_converted_m3", 7, 7.99)
    dvb_h = inc(h, "gas-1", "volume_converted_m3", 7, 7.99)
    assert dvb < dvb_h * (1 - 0.005)
    assert np.allclose(
        inc(r, "gas-1", "volume_unconverted_m3", 0, 7.99),
        inc(h, "gas-1", "volume_unconverted_m3", 0, 7.99),
    )
    p, t = f["pressure_bar"], f["temperature_c"]
    recomputed = (p / 1.01325) * (273.15 / (t + 273.15)) * (1 + 0.0021 * (p - 1.01325))
    assert np.allclose(recomputed, f["conversion_factor"])


def test_gas_conversion_with_a_wrong_temperature() -> None:
    r, h = run("gas_wrong_temperature"), run("honest")
    f = r.devices["gas-1"].fields
    np.testing.assert_array_equal(f["temperature_c"], h.devices["gas-1"].fields["temperature_c"])
    p, t = f["pressure_bar"], f["temperature_c"]
    recomputed = (p / 1.01325) * (273.15 / (t + 273.15)) * (1 + 0.0021 * (p - 1.01325))
    rel = f["conversion_factor"] / recomputed - 1
    before, after = window(r, "gas-1", 0, 2), window(r, "gas-1", 2, DAYS)
    assert np.allclose(rel[before], 0, atol=1e-9)
    expected = (t[after] + 273.15) / (15.0 + 273.15) - 1  # converts with 15 degC
    assert np.allclose(rel[after], expected, atol=1e-9)
    assert np.median(rel[after]) < -0.02  # a cold March: mostly well beyond 1 %
    assert (rel[after] < -0.01).mean() > 0.9
    assert inc(r, "gas-1", "volume_converted_m3", 2, 7.99) < 0.98 * inc(
        h, "gas-1", "volume_converted_m3", 2, 7.99
    )


def test_slow_drift_grows_to_twice_the_mpe() -> None:
    r, h = run("slow_drift", days=40), run("honest", days=40)

    def rel(d: float) -> float:
        return (
            inc(r, "meter-3", "energy_import_kwh", d, d + 1)
            / inc(h, "meter-3", "energy_import_kwh", d, d + 1)
            - 1.0
        )

    assert rel(1) == pytest.approx(0.02 * 1.5 / 120, abs=2e-4)
    assert rel(38) == pytest.approx(0.02 * 38.5 / 120, abs=2e-4)
    # linear growth: reaches 2 % (twice the class-1 MPE) at day 120
    slope = (rel(38) - rel(1)) / 37
    assert slope * 120 == pytest.approx(0.02, rel=0.05)


# --- any device --------------------------------------------------------------------------


def test_comm_loss() -> None:
    r = run("comm_loss")
    s = r.devices["meter-1"]
    w = window(r, "meter-1", 3.25, 4.75)
    assert not s.ok[w].any()
    assert s.ok[~w].all()
    assert np.isnan(s.fields["energy_import_kwh"][w]).all()
    assert np.isfinite(s.fields["energy_import_kwh"][~w]).all()


def test_clock_skew() -> None:
    r = run("clock_skew")
    s = r.devices["water-1"]
    skew = s.fields["device_clock_s"] - s.ts_ns / 1e9
    w = window(r, "water-1", 3, DAYS)
    assert np.all(np.abs(skew[~w]) < 1.0)
    rel_days = (s.ts_ns[w] - s.ts_ns[0]) / DAY_NS - 3.0
    assert np.allclose(skew[w], 600 + 30 * rel_days, atol=1.0)


def test_every_catalogue_scenario_has_a_signature_test() -> None:
    tested = {
        "honest",
        "intermittent_over_registration",
        "calibration_change",
        "totalizer_rollback",
        "transaction_mismatch",
        "tank_leak",
        "ct_bypass",
        "reverse_energy",
        "voltage_loss",
        "register_slowed",
        "magnet_event",
        "cover_event",
        "water_reverse_flow",
        "gas_temperature_drift",
        "magnet_consumption_drop",
        "stuck_register",
        "gas_wrong_temperature",
        "slow_drift",
        "comm_loss",
        "clock_skew",
    } | {f"over_registration_{t}pct" for t in ("0_15", "0_3", "0_5", "1", "3")}
    catalogue = {n for n in scenario_names() if n != "demo"}
    assert catalogue == tested


def test_intermittent_chip_switched_on_and_off_in_cycles() -> None:
    from simulators.catalogue import catalogue_scenario
    from simulators.spec import Condition, Label

    base = catalogue_scenario("honest")
    chip = Condition(
        "nozzle-3",
        Label.INTERMITTENT_OVER_REGISTRATION,
        2 * 86_400.0,
        magnitude=0.05,
        params={"fraction": 1.0, "on_days": 1.0, "off_days": 1.0},
    )
    scn = dataclasses.replace(base, conditions=(chip,))
    r = generate(scn, seed=SEED, days=DAYS)
    h = run("honest")
    for d in range(2, DAYS - 1):
        gain, sales = tank_gain(r, d + 0.01, d + 0.99)
        honest_gain, _ = tank_gain(h, d + 0.01, d + 0.99)
        effect = (gain - honest_gain) / sales[3]
        if d % 2 == 0:  # days 2, 4, 6: armed
            assert effect == pytest.approx(0.05, rel=0.15), d
        else:
            assert abs(effect) < 0.004, d
