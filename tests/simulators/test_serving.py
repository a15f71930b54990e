"""What the simulators serve over the network is what the offline mode generates.

The drivers' own pollers (`drivers.bus.run_bus`) read the served devices over
Modbus TCP, Modbus RTU on a socat pty pair and MQTT (a real Mosquitto), and
the values must equal the offline arrays for the same scenario, seed and
start, to the resolution of each register type. Debian's `mbpoll` reads a
simulated SDM630.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from drivers.bus import run_bus
from drivers.codec import DataType
from drivers.links import MqttLink, PolledDevice, SerialLink, SubscribedDevice, TcpLink
from drivers.profiles import Profile, load_profile
from drivers.reading import Reading
from simulators.offline import OfflineRun, generate
from simulators.serve import Simulation, serve
from simulators.spec import DAY_S, NS_PER_S
from tests.services import ServiceProcess

pytestmark = pytest.mark.integration

SEED = 11
START_NS = 1_780_272_000 * NS_PER_S  # 2026-06-01 00:00 UTC
AT_S = 3 * DAY_S + 7.4 * 3600  # day 3, 07:24: nozzles busy, a delivery near


def tolerance(profile: Profile, name: str, value: float) -> float:
    if profile.mqtt is not None:
        return 1e-9 * max(1.0, abs(value))
    f = profile.field(name)
    if f.data_type is DataType.F32:
        return 1e-6 * max(1.0, abs(value))
    if f.data_type is DataType.F64:
        return 1e-12 * max(1.0, abs(value))
    return abs(f.scale) / 2 + 1e-9


def offline_at(run: OfflineRun, dev: str, at_ns: int) -> tuple[dict[str, float], bool]:
    s = run.devices[dev]
    i = int(np.searchsorted(s.ts_ns, at_ns, side="right") - 1)
    return {k: float(v[i]) for k, v in s.fields.items()}, bool(s.ok[i])


def assert_matches(run: OfflineRun, sim: Simulation, reading: Reading, at_ns: int) -> int:
    """Every field of `reading` equals the offline value; returns how many were compared."""
    spec = sim.scenario.device(reading.device_id)
    profile = load_profile(spec.profile, kind=spec.kind)
    expected, ok = offline_at(run, reading.device_id, at_ns)
    assert ok and reading.ok, reading
    assert set(reading.fields) == set(profile.field_names)
    ts_s = (
        float(
            run.devices[reading.device_id].ts_ns[
                np.searchsorted(run.devices[reading.device_id].ts_ns, at_ns, side="right") - 1
            ]
        )
        / NS_PER_S
    )
    for name, got in reading.fields.items():
        want = expected[name]
        if name == "device_clock_s":  # a clock ticks between samples: now + the sample's skew
            want = float(np.floor(at_ns / NS_PER_S + (want - ts_s)))
        assert got == pytest.approx(want, abs=tolerance(profile, name, want)), (
            reading.device_id,
            name,
        )
    return len(reading.fields)


async def collect(
    link: TcpLink | SerialLink | MqttLink,
    devices: Sequence[PolledDevice] | Sequence[SubscribedDevice],
    *,
    want: set[str],
    timeout_s: float = 20.0,
    accept: object = None,
) -> dict[str, Reading]:
    """Run the drivers' bus until every device in `want` gave a reading."""
    got: dict[str, Reading] = {}
    done = asyncio.Event()

    def sink(r: Reading) -> None:
        if r.device_id not in got and (r.ok or accept == "any"):
            got[r.device_id] = r
        if want <= set(got):
            done.set()

    task = asyncio.create_task(run_bus(link, devices, sink), name="test-bus")
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return got


def polled(
    sim: Simulation, *, interval_s: float = 0.2, timeout_s: float = 1.0
) -> list[PolledDevice]:
    out = []
    for d in sim.devices:
        if d.unit_id is None:
            continue
        spec = sim.scenario.device(d.id)
        out.append(
            PolledDevice(
                d.id,
                load_profile(d.profile, kind=spec.kind),
                d.unit_id,
                poll_interval_s=interval_s,
                timeout_s=timeout_s,
                retries=0,
            )
        )
    return out


async def test_drivers_over_modbus_tcp_read_the_offline_values() -> None:
    run = generate("honest", seed=SEED, days=4, start_ns=START_NS)
    at_ns = START_NS + int(AT_S * NS_PER_S)
    async with serve(
        "honest", seed=SEED, speed=0.0, start_ns=START_NS, at_ns=at_ns, device_clock="simulated"
    ) as sim:
        devices = polled(sim)
        assert len(devices) == len(run.devices)
        got = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=2.0),
            devices,
            want={d.id for d in devices},
        )
        compared = sum(assert_matches(run, sim, r, at_ns) for r in got.values())
        assert compared > 100
        # some nozzle is mid-transaction: the partial values are served too
        states = {r.fields["state"] for r in got.values() if "state" in r.fields}
        assert states - {0.0}
        # later: the clock moves, the served values follow
        at2 = at_ns + int(0.6 * DAY_S * NS_PER_S)
        sim.set_time(at2)
        got2 = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=2.0),
            devices,
            want={d.id for d in devices},
        )
        for r in got2.values():
            assert_matches(run, sim, r, at2)
        assert got2["tank-1"].fields["net_volume_l"] != got["tank-1"].fields["net_volume_l"]


async def test_drivers_over_rtu_on_a_pty_read_the_offline_values(tmp_path: Path) -> None:
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed (scripts/test installs it)")
    run = generate("honest", seed=SEED, days=4, start_ns=START_NS)
    at_ns = START_NS + int(AT_S * NS_PER_S)
    link = str(tmp_path / "rtu")
    async with serve(
        "honest",
        seed=SEED,
        speed=0.0,
        start_ns=START_NS,
        at_ns=at_ns,
        rtu_link=link,
        device_clock="simulated",
    ) as sim:
        assert sim.rtu_port == link
        subset = {"meter-1", "feeder-1", "nozzle-2", "tank-1", "water-1", "gas-1"}
        devices = [d for d in polled(sim, interval_s=0.5) if d.id in subset]
        got = await collect(SerialLink(link, baudrate=19200, timeout_s=1.0), devices, want=subset)
        for r in got.values():
            assert_matches(run, sim, r, at_ns)


async def test_drivers_over_mqtt_read_the_offline_values(mosquitto: ServiceProcess) -> None:
    run = generate("demo", seed=SEED, days=1, start_ns=START_NS)
    at_ns = START_NS + int(0.4 * DAY_S * NS_PER_S)
    async with serve(
        "demo",
        seed=SEED,
        speed=0.0,
        start_ns=START_NS,
        at_ns=at_ns,
        mqtt=(mosquitto.host, mosquitto.port),
        mqtt_period_s=0.3,
        device_clock="simulated",
    ) as sim:
        mqtt_devs = [d for d in sim.devices if d.topic is not None]
        assert {d.profile for d in mqtt_devs} == {"tasmota_energy", "shelly_em"}
        subs = [
            SubscribedDevice(
                d.id, load_profile(d.profile, kind=sim.scenario.device(d.id).kind), d.topic or ""
            )
            for d in mqtt_devs
        ]
        merged: dict[str, dict[str, float]] = {d.id: {} for d in mqtt_devs}
        done = asyncio.Event()

        def sink(r: Reading) -> None:
            if r.ok:
                merged[r.device_id].update(r.fields)
            if all(set(merged[s.id]) >= set(s.profile.field_names) for s in subs):
                done.set()

        task = asyncio.create_task(
            run_bus(MqttLink(mosquitto.host, mosquitto.port, client_id="sim-test"), subs, sink)
        )
        try:
            await asyncio.wait_for(done.wait(), 15)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for s in subs:
            fields = merged[s.id]
            reading = Reading(s.id, sim.scenario.device(s.id).kind, at_ns, 0, fields)
            assert_matches(run, sim, reading, at_ns)
        assert sim.mqtt_published >= 3


async def test_a_device_in_comm_loss_does_not_answer() -> None:
    # comm_loss: meter-1 silent from day 3 06:00 to day 4 18:00
    at_ns = START_NS + int(3.5 * DAY_S * NS_PER_S)
    async with serve(
        "comm_loss", seed=SEED, speed=0.0, start_ns=START_NS, at_ns=at_ns, device_clock="simulated"
    ) as sim:
        devices = [d for d in polled(sim, timeout_s=0.3) if d.id in {"meter-1", "meter-2"}]
        got = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=0.3),
            devices,
            want={"meter-1", "meter-2"},
            accept="any",
        )
        assert got["meter-2"].ok
        assert got["meter-1"].quality == "timeout"
        sim.set_time(START_NS + int(5 * DAY_S * NS_PER_S))  # after the outage
        again = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=0.3), devices, want={"meter-1"}
        )
        assert again["meter-1"].ok


@pytest.mark.parametrize("mode", ["tcp", "rtu"])
async def test_mbpoll_reads_a_simulated_sdm630(mode: str, tmp_path: Path) -> None:
    mbpoll = shutil.which("mbpoll")
    if mbpoll is None:
        pytest.fail("mbpoll is not installed (scripts/test installs it)")
    at_ns = START_NS + int(AT_S * NS_PER_S)
    link = str(tmp_path / "rtu") if mode == "rtu" else None
    async with serve(
        "honest", seed=SEED, speed=0.0, start_ns=START_NS, at_ns=at_ns, rtu_link=link
    ) as sim:
        unit = next(d.unit_id for d in sim.devices if d.id == "meter-1")
        # -t 3:float input registers as float32, -B high word first (SDM630 is ABCD),
        # -r 1 = register 0 (1-based references), 6 floats: V L1-L3, I L1-L3.
        common = ["-a", str(unit), "-t", "3:float", "-B", "-r", "1", "-c", "6", "-1", "-o", "2"]
        if link is None:
            argv = ["-m", "tcp", *common, "-p", str(sim.modbus_port), "127.0.0.1"]
        else:
            argv = ["-m", "rtu", "-b", "19200", "-P", "none", *common, link]
        proc = await asyncio.create_subprocess_exec(
            mbpoll, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        values = {}
        for line in out.decode().splitlines():
            if line.startswith("["):
                ref, val = line.split(":", 1)
                values[int(ref.strip("[]"))] = float(val)
        expected = sim.sample("meter-1").fields
        names = [
            "voltage_l1_v",
            "voltage_l2_v",
            "voltage_l3_v",
            "current_l1_a",
            "current_l2_a",
            "current_l3_a",
        ]
        assert sorted(values) == [1, 3, 5, 7, 9, 11]
        for ref, name in zip(sorted(values), names, strict=True):
            assert values[ref] == pytest.approx(expected[name], rel=1e-5), name
        assert 200 < values[1] < 260


async def test_modbus_keeps_serving_while_the_broker_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.services import free_port

    at_ns = START_NS + int(AT_S * NS_PER_S)
    async with serve(
        "demo",
        seed=SEED,
        speed=0.0,
        start_ns=START_NS,
        at_ns=at_ns,
        mqtt=("127.0.0.1", free_port()),
        mqtt_period_s=0.2,
    ) as sim:
        devices = [d for d in polled(sim) if d.id in {"meter-1", "tank-1"}]
        got = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=1.0),
            devices,
            want={"meter-1", "tank-1"},
        )
        assert got["tank-1"].ok and got["meter-1"].ok
        await asyncio.sleep(1.0)  # a few reconnect attempts
        assert sim.mqtt_published == 0
    warnings = [r for r in caplog.records if "MQTT publisher" in r.getMessage()]
    assert len(warnings) == 1  # the broker's failure is logged once, not per attempt


async def test_a_taken_port_is_named() -> None:
    async with serve("honest", speed=0.0, start_ns=START_NS) as first:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.modbus_port}"):
            async with serve("honest", speed=0.0, start_ns=START_NS, modbus_port=first.modbus_port):
                pass


async def test_device_clocks_follow_the_wall_clock_plus_the_injected_skew() -> None:
    # clock_skew: water-1 jumps 600 s ahead on day 3 and gains 30 s a day
    at_ns = START_NS + int(3.5 * DAY_S * NS_PER_S)
    async with serve("clock_skew", seed=SEED, speed=0.0, start_ns=START_NS, at_ns=at_ns) as sim:
        devices = [d for d in polled(sim) if d.id in {"water-1", "water-2"}]
        t0 = time.time()
        got = await collect(
            TcpLink("127.0.0.1", sim.modbus_port, timeout_s=1.0),
            devices,
            want={"water-1", "water-2"},
        )
        t1 = time.time()
        honest = got["water-2"].fields["device_clock_s"]
        skewed = got["water-1"].fields["device_clock_s"]
        assert t0 - 1 <= honest <= t1 + 1  # real time, not the simulated 2026-06 clock
        assert 600 + 15 - 2 <= skewed - honest <= 600 + 15 + 2
