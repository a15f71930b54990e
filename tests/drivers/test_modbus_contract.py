"""One contract for every Modbus transport, checked against peers this project did not write.

Transports: Modbus TCP against the PyPI pyModbusTCP server and against
pymodbus's server, RTU over TCP against pymodbus's RTU-framed server, and
serial RTU over a socat pty pair with pymodbus's serial server on the far end.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from drivers.bus import Link, run_bus
from drivers.links import PolledDevice, RtuOverTcpLink, SerialLink, TcpLink
from drivers.profiles import load_profile
from drivers.reading import Quality
from drivers.status import BusStatus, DeviceState
from tests.drivers.conftest import Collector
from tests.drivers.peers import Image, pymodbus_server, register_image
from tests.services import free_port

pytestmark = pytest.mark.integration

WATER = load_profile("water_meter")
SDM = load_profile("eastron_sdm630")
WATER_VALUES = {
    "volume_forward_m3": 1234.5,
    "volume_reverse_m3": 2.25,
    "flow_m3h": -0.75,
    "status_bits": 0b101,
    "device_clock_s": 1_800_000_000,
}
WATER_EXPECTED = {**WATER_VALUES, "reverse_flow_flag": 1, "magnet_flag": 0, "leak_flag": 1}
SDM_VALUES = {f.name: 100.0 + i for i, f in enumerate(SDM.fields)}

Serve = Callable[[Mapping[int, Image]], contextlib.AbstractAsyncContextManager[Link]]


@contextlib.asynccontextmanager
async def _pymodbustcp(units: Mapping[int, Image]) -> AsyncIterator[Link]:
    from pyModbusTCP.server import ModbusServer

    port = free_port()
    server = ModbusServer("127.0.0.1", port, no_block=True)
    # pyModbusTCP serves one data bank whatever the unit id: merge the images
    for image in units.values():
        for fc, table in image.items():
            for addr, value in table.items():
                if fc == 3:
                    server.data_bank.set_holding_registers(addr, [value])
                else:
                    server.data_bank.set_input_registers(addr, [value])
    server.start()
    try:
        yield TcpLink("127.0.0.1", port, timeout_s=0.5)
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def _pymodbus_tcp(units: Mapping[int, Image]) -> AsyncIterator[Link]:
    port = free_port()
    async with pymodbus_server(units, port=port):
        yield TcpLink("127.0.0.1", port, timeout_s=0.5)


@contextlib.asynccontextmanager
async def _pymodbus_rtu_over_tcp(units: Mapping[int, Image]) -> AsyncIterator[Link]:
    port = free_port()
    async with pymodbus_server(units, framer="rtu", port=port):
        yield RtuOverTcpLink("127.0.0.1", port, timeout_s=0.5)


def _serial(pty_pair: tuple[str, str]) -> Serve:
    @contextlib.asynccontextmanager
    async def serve(units: Mapping[int, Image]) -> AsyncIterator[Link]:
        async with pymodbus_server(units, serial_port=pty_pair[0]):
            yield SerialLink(pty_pair[1], baudrate=19200, timeout_s=0.5)

    return serve


@pytest.fixture(params=["tcp-pyModbusTCP", "tcp-pymodbus", "rtu_over_tcp-pymodbus", "rtu-socat"])
def transport(request: pytest.FixtureRequest) -> tuple[str, Serve]:
    name = request.param
    if name == "rtu-socat":
        return name, _serial(request.getfixturevalue("pty_pair"))
    serve: Any = {
        "tcp-pyModbusTCP": _pymodbustcp,
        "tcp-pymodbus": _pymodbus_tcp,
        "rtu_over_tcp-pymodbus": _pymodbus_rtu_over_tcp,
    }[name]
    return name, serve


async def _run_for(
    link: Link, devices: list[PolledDevice], sink: Collector, seconds: float
) -> BusStatus:
    status = BusStatus()
    task = asyncio.create_task(run_bus(link, devices, sink, status=status))
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return status


async def test_reads_every_field_of_two_devices(
    transport: tuple[str, Serve], collector: Collector
) -> None:
    _, serve = transport
    units = {1: register_image(WATER, WATER_VALUES), 2: register_image(SDM, SDM_VALUES)}
    devices = [
        PolledDevice("water-1", WATER, 1, poll_interval_s=0.25, timeout_s=0.2),
        PolledDevice("sdm-2", SDM, 2, poll_interval_s=0.25, timeout_s=0.2),
    ]
    async with serve(units) as link:
        status = await _run_for(link, devices, collector, 1.4)
    for device, expected in zip(devices, (WATER_EXPECTED, SDM_VALUES), strict=True):
        dev_id = device.id
        readings = collector.of(dev_id)
        assert len(readings) >= 4, readings
        assert all(r.quality == Quality.OK for r in readings), [r.quality for r in readings]
        last = readings[-1]
        assert set(last.fields) == set(expected)
        for name, value in expected.items():
            assert math.isclose(last.fields[name], value, rel_tol=1e-6), name
        # one sequence number per poll, no gaps
        seqs = [r.seq for r in readings]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # polls sit on the device's own wall-clock grid: the interval plus its phase
        phases = [round((r.ts_ns / 1e9 - device.poll_phase_s) % 0.25, 3) for r in readings]
        assert max(phases) < 0.15, (dev_id, phases)
        assert status.devices[dev_id].state is DeviceState.UP
        assert status.devices[dev_id].last_ok_ns == last.ts_ns
    assert status.connects == 1


async def test_failed_polls_carry_no_values(
    transport: tuple[str, Serve], collector: Collector
) -> None:
    name, serve = transport
    units = {1: register_image(WATER, WATER_VALUES)}
    # unit 1 is healthy; unit 7 does not exist. pyModbusTCP answers any unit id,
    # so there the missing device is a register the profile reads past the map.
    missing = PolledDevice(
        "ghost", WATER, 7, poll_interval_s=0.25, timeout_s=0.15, retries=0, down_after=2
    )
    async with serve(units) as link:
        devices = [PolledDevice("water-1", WATER, 1, poll_interval_s=0.25, timeout_s=0.15)]
        if name != "tcp-pyModbusTCP":
            devices.append(missing)
        status = await _run_for(link, devices, collector, 1.2)
    assert all(r.ok for r in collector.of("water-1"))
    assert len(collector.of("water-1")) >= 4
    if name != "tcp-pyModbusTCP":
        ghost = collector.of("ghost")
        assert ghost, "a missing device still yields readings"
        assert all(not r.ok and not r.fields for r in ghost)
        assert status.devices["ghost"].state in (DeviceState.DOWN, DeviceState.BACKOFF)
        assert status.devices["ghost"].errors == len(ghost)


async def test_unmapped_registers_give_exception_02(
    transport: tuple[str, Serve], collector: Collector
) -> None:
    name, serve = transport
    if name == "tcp-pyModbusTCP":
        pytest.skip("pyModbusTCP maps all 65536 registers: there is no illegal address")
    # the image holds only the water registers; the SDM profile asks for input registers
    async with serve({1: register_image(WATER, WATER_VALUES)}) as link:
        await _run_for(
            link, [PolledDevice("sdm", SDM, 1, poll_interval_s=0.25, timeout_s=0.2)],
            collector, 0.8,
        )
    readings = collector.of("sdm")
    assert readings
    assert {r.quality for r in readings} == {"exception:2"}
    assert all(not r.fields for r in readings)
