"""Debian's mbpoll reads registers our codec encoded, served by pymodbus: an outside check
that `encode` (which the simulators use) lays out floats and ints as real masters expect."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from drivers.profiles import load_profile
from tests.drivers.peers import pymodbus_server, register_image
from tests.services import free_port

pytestmark = pytest.mark.integration


async def _mbpoll(*args: str) -> list[float]:
    exe = shutil.which("mbpoll")
    assert exe, "mbpoll is not installed"
    proc = await asyncio.create_subprocess_exec(
        exe, "-1", "-0", "-o", "2", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [float(v) for v in re.findall(r"^\[\d+\]:\s+(\S+)", out.decode(), re.MULTILINE)]


async def test_mbpoll_reads_encoded_registers() -> None:
    sdm = load_profile("eastron_sdm630")
    abb = load_profile("abb_b2x")
    water = load_profile("water_meter")
    units = {
        1: register_image(sdm, {"voltage_l1_v": 230.5, "voltage_l2_v": 229.25,
                                "voltage_l3_v": -1.5e-3}),
        2: register_image(abb, {"power_total_w": -1500.25, "energy_import_kwh": 12.5}),
        3: register_image(water, {"flow_m3h": 3.75, "volume_forward_m3": 1.0}),
    }
    port = free_port()
    async with pymodbus_server(units, port=port):
        base = ["-m", "tcp", "-p", str(port), "127.0.0.1"]
        # SDM630: input registers, float32 ABCD (-B = big-endian word order)
        volts = await _mbpoll("-a", "1", "-t", "3:float", "-B", "-r", "0", "-c", "3", *base)
        assert volts == pytest.approx([230.5, 229.25, -1.5e-3])
        # ABB: holding, i32 big-endian x0.01
        power = await _mbpoll("-a", "2", "-t", "4:int", "-B", "-r", str(0x5B14), *base)
        assert power == [-150025]
        # water flow: float32 CDAB, mbpoll's default (little-endian word order)
        flow = await _mbpoll("-a", "3", "-t", "4:float", "-r", "4", *base)
        assert flow == [3.75]
