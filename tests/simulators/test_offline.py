"""The offline generator: contract, determinism, physics sanity, scenario files."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.fields import CANONICAL_FIELDS
from drivers.reading import DeviceKind
from gateway.commands import simulate
from simulators.catalogue import get_scenario, scenario_names, serve_options
from simulators.engine import SimClock, SimEngine
from simulators.offline import OfflineRun, generate
from simulators.spec import DAY_S, NS_PER_S, ScenarioError

DAY_NS = DAY_S * NS_PER_S


@pytest.fixture(scope="module")
def honest() -> OfflineRun:
    return generate("honest", seed=3, days=3)


def test_offline_run_contract(honest: OfflineRun) -> None:
    assert set(honest.devices) == {d.id for d in honest.scenario.devices}
    for dev_id, s in honest.devices.items():
        kind, cls = honest.meta(dev_id)
        assert s.kind == kind
        assert cls
        assert s.ts_ns.dtype == np.int64
        assert s.ok.dtype == np.bool_ and s.ok.shape == s.ts_ns.shape
        assert np.all(np.diff(s.ts_ns) > 0)
        assert set(s.fields) <= set(CANONICAL_FIELDS[DeviceKind(kind)]), dev_id
        for name, v in s.fields.items():
            assert v.dtype == np.float64 and v.shape == s.ts_ns.shape, name
            assert np.isfinite(v).all(), (dev_id, name)
    assert {g.type for g in honest.groups} == {"tank", "feeder", "bulk"}
    assert honest.truth == []


def test_honest_counters_never_decrease(honest: OfflineRun) -> None:
    for dev_id, s in honest.devices.items():
        kind = DeviceKind(s.kind)
        for name, v in s.fields.items():
            if CANONICAL_FIELDS[kind][name].counter:
                assert np.all(np.diff(v) >= -1e-9), (dev_id, name)


def test_same_seed_same_arrays_and_other_seed_other_arrays() -> None:
    a = generate("ct_bypass", seed=5, days=2)
    b = generate("ct_bypass", seed=5, days=2)
    c = generate("ct_bypass", seed=6, days=2)
    for dev in a.devices:
        for name in a.devices[dev].fields:
            np.testing.assert_array_equal(a.devices[dev].fields[name], b.devices[dev].fields[name])
    assert not np.array_equal(
        a.devices["meter-1"].fields["power_total_w"], c.devices["meter-1"].fields["power_total_w"]
    )


def test_a_longer_run_starts_with_the_shorter_one() -> None:
    short, long = generate("tank_leak", seed=2, days=2), generate("tank_leak", seed=2, days=4)
    for dev, s in short.devices.items():
        n = s.ts_ns.size
        np.testing.assert_array_equal(long.devices[dev].ts_ns[:n], s.ts_ns)
        for name, v in s.fields.items():
            np.testing.assert_array_equal(long.devices[dev].fields[name][:n], v)


def test_truth_labels_the_injected_condition() -> None:
    run = generate("over_registration_1pct", seed=1, days=1)
    (t,) = run.truth
    assert (t.device_id, t.label, t.magnitude) == ("nozzle-2", "over_registration", 0.01)
    assert t.start_ns == run.scenario.start_ns + 3 * DAY_NS and t.end_ns is None
    assert t.detectors_expected


def test_realistic_fuel_transactions() -> None:
    run = generate("honest", seed=4, days=7, step_s={"dispenser_nozzle": 10})
    f = run.devices["nozzle-3"].fields
    flows = f["flow_rate_lpm"][f["state"] == 1]
    assert flows.min() >= 25.0 - 1e-9 and flows.max() <= 50.0 * 1.01
    assert 36 < np.median(flows) < 45
    done = np.flatnonzero(np.diff(f["transaction_counter"]) == 1) + 1
    vols = f["transaction_volume_l"][done]
    assert 15 < np.median(vols) < 45 and vols.max() < 100
    # prices and amounts agree to the display rounding
    amounts = f["transaction_amount"][done]
    assert np.allclose(amounts, np.round(vols * f["unit_price"][done], 2), atol=0.011)
    # busy hours: more sales 07-09 than 02-04
    hours = (run.devices["nozzle-3"].ts_ns[done] // NS_PER_S % DAY_S) / 3600
    assert ((hours >= 7) & (hours < 9)).sum() > 3 * ((hours >= 2) & (hours < 4)).sum()


def test_electricity_physics(honest: OfflineRun) -> None:
    f = honest.devices["meter-1"].fields
    p = f["voltage_l1_v"] * f["current_l1_a"]
    assert np.all(np.abs(f["power_l1_w"]) <= p + 1e-6)  # |P| <= U I
    assert np.allclose(f["power_total_w"], f["power_l1_w"] + f["power_l2_w"] + f["power_l3_w"])
    assert np.all((f["voltage_l1_v"] > 220) & (f["voltage_l1_v"] < 240))
    assert np.all(np.abs(f["frequency_hz"] - 50) < 0.2)
    i = np.stack([f["current_l1_a"], f["current_l2_a"], f["current_l3_a"]])
    assert np.all(f["current_n_a"] < i.sum(axis=0))  # the neutral never exceeds the phase sum
    # daily profile: evening peak above night
    hours = (honest.devices["meter-1"].ts_ns // NS_PER_S % DAY_S) / 3600
    assert (
        f["power_total_w"][(hours > 18) & (hours < 21)].mean()
        > 2 * f["power_total_w"][(hours > 2) & (hours < 5)].mean()
    )


def test_water_night_minimum(honest: OfflineRun) -> None:
    s = honest.devices["water-1"]
    hours = (s.ts_ns // NS_PER_S % DAY_S) / 3600
    night = s.fields["flow_m3h"][(hours >= 2) & (hours < 4)]
    assert (night == 0).mean() > 0.5
    bulk = honest.devices["bulk-water"].fields["flow_m3h"]
    assert bulk.min() > 0  # the district's leakage never stops


def test_a_month_of_the_standard_site_generates_quickly() -> None:
    t0 = time.perf_counter()
    run = generate("honest", seed=0, days=31)
    elapsed = time.perf_counter() - t0
    assert run.devices["meter-1"].ts_ns.size == 31 * 288
    assert elapsed < 30  # generous: a behaviour bound, the speed itself is benchmarked


def test_engine_serves_the_offline_sample_and_follows_its_clock() -> None:
    scn = get_scenario("honest")
    run = generate(scn, seed=9, days=2)
    clock = SimClock(scn.start_ns + DAY_NS + 123 * NS_PER_S, speed=0.0)
    engine = SimEngine(scn, seed=9, clock=clock)
    s = engine.sample("meter-2")
    i = DAY_S // 300
    assert s.ok and s.ts_ns == run.devices["meter-2"].ts_ns[i]
    assert s.fields["energy_import_kwh"] == run.devices["meter-2"].fields["energy_import_kwh"][i]
    t0 = time.monotonic()
    clock.set(scn.start_ns + 5 * NS_PER_S, speed=3600.0)  # back in time, one hour per second
    time.sleep(0.2)
    lo_s = time.monotonic() - t0
    later = engine.sample("meter-2")
    hi_s = time.monotonic() - t0
    # 300 s samples: the index follows the simulated clock, whatever the real delay
    assert int((5 + 0.2 * 3600) // 300) <= later.index <= int((5 + hi_s * 3600) // 300)
    assert later.index >= int((5 + min(lo_s, 0.2) * 3600) // 300)
    assert later.fields["energy_import_kwh"] == pytest.approx(
        run.devices["meter-2"].fields["energy_import_kwh"][later.index]
    )


def test_scenario_files_and_their_errors(tmp_path: Path) -> None:
    assert "demo" in scenario_names() and "honest" in scenario_names()
    demo = get_scenario("demo")
    assert len(demo.conditions) == 4 and {d.transport for d in demo.devices} == {"modbus", "mqtt"}
    assert serve_options("demo")["speed"] == 60.0
    f = tmp_path / "site.toml"
    f.write_text(
        'base = "standard"\n[[conditions]]\ndevice = "meter-1"\nlabel = "cover_event"\n'
        "start_day = 1\n"
    )
    assert get_scenario(f).conditions[0].start_s == DAY_S
    bad = {
        'base = "standard"\n[[conditions]]\ndevice = "meter-9"\nlabel = "cover_event"\n': "meter-9",
        'base = "standard"\n[[conditions]]\ndevice = "meter-1"\nlabel = "tank_leak"\n': "tank_leak",
        'base = "standard"\n[[conditions]]\ndevice = "meter-1"\nlabel = "teleport"\n': "teleport",
        'colour = "red"\n': "colour",
        '[[devices]]\nid = "x"\nkind = "water"\nprofile = "water_meter"\nunit_id = "one"\n': (
            r"devices\[0\]"
        ),
        '[[devices]]\nid = "x"\nkind = "toaster"\nprofile = "p"\n': "toaster",
        '[[devices]]\nid = "x"\nkind = "water"\n': r"devices\[0\]: missing key 'profile'",
        'base = "standard"\n[[groups]]\nid = "g"\ntype = "ring"\nreference = "meter-1"\n'
        'members = ["meter-2"]\n': "ring",
        "devices = [1]\n": "must be a table",
        "name = \n": "TOML",
    }
    for text, needle in bad.items():
        f.write_text(text)
        with pytest.raises(ScenarioError, match=needle):
            get_scenario(f)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        get_scenario("no_such_scenario")


def _simulate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return simulate.main(parser.parse_args(argv))


def test_simulate_command_prints_what_it_serves(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _simulate(["demo", "--port", "0", "--no-mqtt", "--duration-s", "0.3", "--speed", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "Modbus TCP on 127.0.0.1:" in out
    assert "nozzle-3: over_registration" in out
    assert "meter-2        electricity       eastron_sdm630" in out
    assert "check-3" not in out  # MQTT devices are not served without a broker
    assert _simulate(["nowhere.toml"]) == 1
    assert "nowhere.toml" in capsys.readouterr().err
    assert _simulate(["--list"]) == 0
    assert "over_registration_0_15pct" in capsys.readouterr().out


def test_simulate_writes_a_gateway_config_that_validates(tmp_path: Path) -> None:
    from gateway.config import load_config

    out = tmp_path / "gw.toml"
    argv = [
        "demo",
        "--port",
        "0",
        "--mqtt",
        "127.0.0.1:1",
        "--duration-s",
        "0.2",
        "--config-out",
        str(out),
    ]
    assert _simulate(argv) == 0
    settings = load_config(out)
    assert len(settings.devices) == 17
    assert {g.id for g in settings.groups} == {
        "tank-1",
        "feeder-1",
        "district-1",
        "check-3",
        "check-4",
    }
    by_id = {d.id: d for d in settings.devices}
    assert by_id["check-3"].topic == "demo-check-3" and by_id["meter-2"].unit_id == 23
    # speed x60: a 60 s electricity sample changes every real second; polled every 2 s
    assert by_id["meter-1"].poll_interval_s == 2.0
    assert by_id["water-1"].poll_interval_s == 5.0


def test_sporadic_timeouts_of_an_honest_line() -> None:
    base = get_scenario("honest")
    spec = dataclasses.replace(
        base.device("meter-1"), params={"mean_kw": 2.5, "timeout_rate": 0.05}
    )
    scn = dataclasses.replace(
        base, devices=tuple(spec if d.id == "meter-1" else d for d in base.devices)
    )
    run = generate(scn, seed=1, days=10)
    ok = run.devices["meter-1"].ok
    assert 0.03 < 1 - ok.mean() < 0.07
    assert np.isnan(run.devices["meter-1"].fields["power_total_w"][~ok]).all()
    assert run.devices["meter-2"].ok.all()
