"""A nozzle's apparent flow rate against its own history and its sisters (`anomaly.flowrate`)."""

import numpy as np
import pytest

from anomaly.flowrate import BASE_DAYS, NozzleFlows

from .synth import fuel_station, run

DAY_NS = 86_400_000_000_000


def _flow_findings(found):
    return [f for f in found if f.detector == "behaviour.flow_rate"]


def test_a_nozzle_whose_flow_rises_by_the_cheat_factor_is_named():
    site = fuel_station(days=14, seed=21, step=(1, 0.04, 96), flow_lpm=40.0)
    _, found = run(site)
    flows = _flow_findings(found)
    assert flows, "no flow-rate finding"
    assert {f.devices[0] for f in flows} == {"N2"}
    assert flows[0].estimate == pytest.approx(4.0, abs=1.5)
    assert flows[0].devices[1] == "T1"


def test_steady_flows_and_a_common_change_raise_nothing():
    site = fuel_station(days=12, seed=22, flow_lpm=40.0)
    _, found = run(site)
    assert _flow_findings(found) == []


def test_sisters_take_out_what_moves_every_nozzle_alike():
    flows = NozzleFlows(3)
    rng = np.random.default_rng(3)
    out = []
    for day in range(BASE_DAYS + 6):
        # from day 5 every nozzle reads 5 % faster (warmer, thinner product)
        common = 1.05 if day >= 5 else 1.0
        ts = [np.sort(rng.integers(day * DAY_NS, (day + 1) * DAY_NS, 60)) for _ in range(3)]
        f = [40.0 * common * rng.normal(1, 0.01, 60) for _ in range(3)]
        st = [np.ones(60) for _ in range(3)]
        out.append(flows.add(ts, f, st))
    k, _, e = (np.concatenate(x) for x in zip(*out, strict=True))
    assert len(k) >= 3 * 4
    assert np.max(np.abs(e)) < 0.01
    # against its own history alone, the common change shows fully
    assert np.nanmax(flows.last_r) > 0.04


def test_idle_readings_and_thin_days_are_not_samples():
    flows = NozzleFlows(1)
    ts = [np.arange(0, 2 * DAY_NS, DAY_NS // 100, dtype=np.int64)]
    f = [np.full(200, 40.0)]
    st = [np.where(np.arange(200) % 2 == 0, 1.0, 0.0)]
    st[0][100:] = 0.0  # the second day: idle throughout
    flows.add(ts, f, st)
    assert flows.base[0, 2] == 0  # day one had 50 samples but is still open
    flows.add([np.array([3 * DAY_NS])], [np.array([40.0])], [np.array([1.0])])
    assert flows.base[0, 2] == 1  # day one counted, day two (no samples) did not
