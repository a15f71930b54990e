import numpy as np
import pytest

from anomaly.engine import DeviceModel, Engine, EngineConfigError, GroupModel, StateError

from .synth import fuel_station


def _key(f):
    return (f.detector, f.devices, f.window_end_ns, round(f.score, 9))


def test_restart_from_saved_state_gives_the_same_findings():
    site = fuel_station(days=3, seed=5, errors=(0, 0.03, 0, 0))
    whole = site.engine()
    ref = [f for b in site.batches(whole) for f in whole.process(b)]
    first = site.engine()
    batches = list(site.batches(first))
    got = [f for b in batches[:30] for f in first.process(b)]
    state = first.save_state()
    assert isinstance(state, bytes)
    second = Engine.restore(site.devices, site.groups, state)
    got += [f for b in batches[30:] for f in second.process(b)]
    assert [_key(f) for f in got] == [_key(f) for f in ref]
    assert ref  # the run does find the nozzle


def test_restore_maps_devices_by_id_when_the_config_changes():
    site = fuel_station(days=1, seed=6)
    eng = site.engine()
    for b in site.batches(eng):
        eng.process(b)
    state = eng.save_state()
    devices = [DeviceModel("new", "water", 2.0), *reversed(site.devices)]
    other = Engine.restore(devices, site.groups, state)
    i_old, i_new = eng.index("T1"), other.index("T1")
    assert other.ctx.last["deliveries_net_l"][i_new] == eng.ctx.last["deliveries_net_l"][i_old]
    assert np.isnan(other.ctx.last["deliveries_net_l"][other.index("new")])
    assert other.balance[0].n_used[0] == eng.balance[0].n_used[0]


def test_bad_state_and_bad_config_are_clear_errors():
    eng = Engine([DeviceModel("a", "gas", 1.5)])
    with pytest.raises(StateError):
        eng.load_state(b"not a state")
    with pytest.raises(EngineConfigError, match="device b: unknown kind 'steam'"):
        Engine([DeviceModel("b", "steam", 1.0)])
    with pytest.raises(EngineConfigError, match="duplicate device ids: a"):
        Engine([DeviceModel("a", "gas", 1.5), DeviceModel("a", "gas", 1.5)])
    with pytest.raises(EngineConfigError, match="check group has exactly one member"):
        Engine(
            [
                DeviceModel("a", "gas", 1.5),
                DeviceModel("b", "gas", 1.5),
                DeviceModel("c", "gas", 1.5),
            ],
            [GroupModel("g", "check", "a", ("b", "c"))],
        )


def test_memory_per_device_is_bounded():
    site = fuel_station(days=2, seed=7)
    eng = site.engine()
    batches = list(site.batches(eng))
    for b in batches[:6]:
        eng.process(b)
    early = eng.memory_bytes()
    for b in batches[6:]:
        eng.process(b)
    assert eng.memory_bytes() == early
    # a tank also keeps its latest level points for the step scan: a fixed ring
    from anomaly.tanklevel import RING_POINTS

    level = eng.balance[0].level
    ring = sum(getattr(level, k).nbytes for k in ("ring_t", "ring_seg", "ring_c", "ring_y"))
    # per point: time, segment, the cumulative sales of each nozzle and hours, and Y
    assert ring == RING_POINTS * 8 * (2 + (len(site.devices) - 1) + 1 + 1)
    assert (early - ring) / len(site.devices) < 20_000
