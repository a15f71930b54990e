"""Live device status: an MQTT device that goes silent counts as down, and comes back."""

from __future__ import annotations

import time

from drivers.status import DeviceState as DriverState
from gateway.api.status import DeviceState
from gateway.config import parse_config
from gateway.runtime import StatusBoard


def _settings() -> object:
    return parse_config(
        {
            "buses": [
                {"id": "mq", "transport": "mqtt", "host": "127.0.0.1"},
                {"id": "tcp", "transport": "tcp", "host": "127.0.0.1"},
            ],
            "devices": [
                {
                    "id": "e1",
                    "kind": "electricity",
                    "profile": "shelly_em",
                    "bus": "mq",
                    "topic": "shelly-1",
                    "poll_interval_s": 0.1,
                },
                {
                    "id": "w1",
                    "kind": "water",
                    "profile": "water_meter",
                    "bus": "tcp",
                    "unit_id": 1,
                    "poll_interval_s": 0.1,
                    "timeout_s": 0.05,
                },
            ],
        }
    )


def test_silent_mqtt_device_is_down_until_heard_again() -> None:
    settings = _settings()
    board = StatusBoard(settings, silent_min_s=0.0)  # type: ignore[arg-type]
    now = time.time_ns()
    for bus, dev in (("mq", "e1"), ("tcp", "w1")):
        st = board.buses[bus].device(dev)
        st.state = DriverState.UP
        st.last_ok_ns = now
    states = {d.id: d.state for d in board.devices()}
    assert states == {"e1": DeviceState.UP, "w1": DeviceState.UP}

    # 1 s without a message is more than three 0.1 s periods: silent.
    board.buses["mq"].device("e1").last_ok_ns = now - 1_000_000_000
    # A polled device's state is the driver's to judge, however old its last reading.
    board.buses["tcp"].device("w1").last_ok_ns = now - 1_000_000_000
    states = {d.id: d.state for d in board.devices()}
    assert states == {"e1": DeviceState.DOWN, "w1": DeviceState.UP}

    board.buses["mq"].device("e1").last_ok_ns = time.time_ns()
    assert {d.id: d.state for d in board.devices()}["e1"] is DeviceState.UP
