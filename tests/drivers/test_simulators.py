"""The drivers poll the project's own simulator (demo scenario) over Modbus TCP and MQTT."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from drivers.bus import run_bus
from drivers.fields import CANONICAL_FIELDS
from drivers.links import MqttLink, PolledDevice, SubscribedDevice, TcpLink
from drivers.profiles import load_profile
from drivers.reading import DeviceKind
from drivers.status import BusStatus
from tests.drivers.conftest import Collector
from tests.services import ServiceProcess

pytestmark = pytest.mark.integration


async def test_polls_every_demo_device(mosquitto: ServiceProcess, collector: Collector) -> None:
    from simulators.serve import serve

    async with serve("demo", mqtt=(mosquitto.host, mosquitto.port), mqtt_period_s=0.5) as sim:
        polled: list[PolledDevice] = []
        subscribed: list[SubscribedDevice] = []
        for d in sim.devices:
            profile = load_profile(d.profile, kind=DeviceKind(d.kind))
            if d.unit_id is not None and d.topic is None:
                polled.append(PolledDevice(d.id, profile, d.unit_id, poll_interval_s=0.5,
                                           timeout_s=0.4))
            elif d.topic is not None:
                subscribed.append(SubscribedDevice(d.id, profile, d.topic))
        assert polled, "the demo serves Modbus devices"
        link = TcpLink(sim.modbus_host, sim.modbus_port, timeout_s=0.4)
        tasks = [asyncio.create_task(run_bus(link, polled, collector, status=BusStatus()))]
        if subscribed:
            mlink = MqttLink(mosquitto.host, mosquitto.port, client_id="mw-test-sim")
            tasks.append(asyncio.create_task(run_bus(mlink, subscribed, collector)))
        await asyncio.sleep(2.5)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    for dev in [*polled, *subscribed]:
        readings = collector.of(dev.id)
        assert readings, f"no reading from {dev.id}"
        good = [r for r in readings if r.ok]
        # the simulator may inject sporadic timeouts; most polls must be good
        assert len(good) >= len(readings) / 2, (dev.id, [r.quality for r in readings])
        last = good[-1]
        assert set(last.fields) <= set(CANONICAL_FIELDS[dev.profile.kind])
        assert last.fields, dev.id
    for dev in polled:
        last = [r for r in collector.of(dev.id) if r.ok][-1]
        missing = set(dev.profile.field_names) - set(last.fields)
        assert not missing, (dev.id, missing)
