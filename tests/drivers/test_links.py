"""Link and device specs refuse what cannot work, naming the device."""

from __future__ import annotations

import pytest

from drivers.links import PHASE_STEP_S, MqttLink, PolledDevice, SubscribedDevice
from drivers.profiles import load_profile

WATER = load_profile("water_meter")
TASMOTA = load_profile("tasmota_energy")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="m1: timeout_s must be > 0"):
        PolledDevice("m1", WATER, 1, poll_interval_s=1.0, timeout_s=0.0)
    assert PolledDevice("m1", WATER, 1, poll_interval_s=1.0, timeout_s=0.5).timeout_s == 0.5


def test_profiles_must_match_the_transport() -> None:
    with pytest.raises(ValueError, match="m2: profile tasmota_energy is not a Modbus profile"):
        PolledDevice("m2", TASMOTA, 1)
    with pytest.raises(ValueError, match="m3: profile water_meter is not an MQTT profile"):
        SubscribedDevice("m3", WATER, "t")
    with pytest.raises(ValueError, match="unit_id"):
        PolledDevice("m4", WATER, 300)


def test_mqtt_link_never_shows_its_password() -> None:
    link = MqttLink("broker", 8883, username="gw", password="hunter2-long")
    assert "hunter2" not in repr(link) and "hunter2" not in str(link)


def test_poll_phase_is_stable_per_device_and_spread_over_the_interval() -> None:
    ids = [f"meter-{i}" for i in range(1000)]
    phases = [PolledDevice(i, WATER, 1, poll_interval_s=10.0).poll_phase_s for i in ids]
    # the same id gives the same phase (in any process: CRC-32, not hash())
    assert phases == [PolledDevice(i, WATER, 1, poll_interval_s=10.0).poll_phase_s for i in ids]
    assert all(0.0 <= p < 10.0 for p in phases)
    # spread: every tenth of the interval holds some of the 1,000 devices, none most of them
    counts = [sum(1 for p in phases if k <= p < k + 1) for k in range(10)]
    assert min(counts) > 50 and max(counts) < 150, counts
    # in steps of PHASE_STEP_S, so the devices of one step are woken together
    assert all(abs(p / PHASE_STEP_S - round(p / PHASE_STEP_S)) < 1e-6 for p in phases)
    # an explicit phase wins; 0.0 polls on the exact multiples of the interval
    assert PolledDevice("m1", WATER, 1, poll_interval_s=10.0, phase_s=0.0).poll_phase_s == 0.0
    assert PolledDevice("m1", WATER, 1, poll_interval_s=10.0, phase_s=2.5).poll_phase_s == 2.5


def test_phase_must_lie_within_the_interval() -> None:
    with pytest.raises(ValueError, match="m5: phase_s must be >= 0 and below poll_interval_s"):
        PolledDevice("m5", WATER, 1, poll_interval_s=1.0, phase_s=1.0)
    with pytest.raises(ValueError, match="m5: phase_s"):
        PolledDevice("m5", WATER, 1, poll_interval_s=1.0, phase_s=-0.1)
