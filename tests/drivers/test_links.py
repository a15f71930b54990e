"""Link and device specs refuse what cannot work, naming the device."""

from __future__ import annotations

import pytest

from drivers.links import MqttLink, PolledDevice, SubscribedDevice
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
