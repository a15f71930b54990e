"""Fault tests: silent, late, refusing, busy and connection-dropping devices.

Faults are injected by `FaultPeer` at the socket seam. Each test asserts that
the healthy devices keep their poll period (tolerance stated per test) and
that the failing ones are reported with a bad quality and recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics

import pytest

from drivers.bus import Link, run_bus
from drivers.links import PolledDevice, RtuOverTcpLink, TcpLink
from drivers.modbus import backoff_s, next_aligned_s
from drivers.profiles import Profile, load_profile
from drivers.reading import Quality, Reading
from drivers.status import BusStatus, DeviceState
from tests.drivers.conftest import Collector
from tests.drivers.peers import FaultPeer, Unit, register_image

pytestmark = pytest.mark.integration

WATER = load_profile("water_meter")
IMAGE = register_image(WATER, {"volume_forward_m3": 10.0, "flow_m3h": 1.0, "status_bits": 0})
INTERVAL_S = 0.25
# generous: two noisy cores, and the healthy device must never wait for a failing one
PERIOD_TOLERANCE_S = 0.1


def _device(dev_id: str, unit: int, profile: Profile = WATER, **kw: float) -> PolledDevice:
    opts: dict[str, float] = {
        "poll_interval_s": INTERVAL_S, "timeout_s": 0.12, "retries": 1, "down_after": 2,
        "backoff_cap_s": 0.5,
    }
    opts.update(kw)
    return PolledDevice(dev_id, profile, unit, **opts)  # type: ignore[arg-type]


def _assert_keeps_period(readings: list[Reading], device: PolledDevice) -> None:
    assert all(r.quality == Quality.OK for r in readings), [r.quality for r in readings]
    ts = [r.ts_ns / 1e9 for r in readings]
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert gaps, "not enough readings"
    assert max(abs(g - INTERVAL_S) for g in gaps) < PERIOD_TOLERANCE_S, gaps
    # and each poll sits on the device's own wall-clock grid (interval + its phase)
    assert max((t - device.poll_phase_s) % INTERVAL_S for t in ts) < PERIOD_TOLERANCE_S


@contextlib.asynccontextmanager
async def _bus(link: Link, devices: list[PolledDevice], sink: Collector):  # type: ignore[no-untyped-def]
    status = BusStatus()
    task = asyncio.create_task(run_bus(link, devices, sink, status=status))
    try:
        yield status
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_faulty_units_never_delay_the_healthy_one(collector: Collector) -> None:
    units = {
        1: Unit(IMAGE),
        2: Unit(IMAGE, mode="silent"),
        3: Unit(IMAGE, mode="late", delay_s=0.3),
        4: Unit(IMAGE, mode="exception", exception_code=2),
        5: Unit(IMAGE, mode="exception", exception_code=6),
    }
    names = {1: "healthy", 2: "silent", 3: "late", 4: "refusing", 5: "busy"}
    async with FaultPeer(units) as peer:
        # a gateway that accepts pipelined requests
        link = TcpLink("127.0.0.1", peer.port, timeout_s=0.5, max_in_flight=8)
        devices = [_device(names[u], u) for u in units]
        async with _bus(link, devices, collector) as status:
            await asyncio.sleep(2.0)
            during = len(collector.readings)
            for name in ("silent", "late", "refusing", "busy"):
                st = status.devices[name]
                assert st.state in (DeviceState.DOWN, DeviceState.BACKOFF), (name, st)
                assert st.last_ok_ns is None
            requests_at_heal = {u: units[u].requests for u in units}
            # heal everything
            for u in units.values():
                u.mode = "ok"
            await asyncio.sleep(2.0)
    healthy = collector.of("healthy")
    assert len(healthy) >= 14
    _assert_keeps_period(healthy, devices[0])

    early = collector.readings[:during]
    qualities = {n: {r.quality for r in early if r.device_id == n} for n in names.values()}
    assert qualities["silent"] == {Quality.TIMEOUT}
    assert qualities["late"] == {Quality.TIMEOUT}
    assert qualities["refusing"] == {"exception:2"}
    assert qualities["busy"] == {"exception:6"}
    assert all(not r.fields for r in early if r.device_id != "healthy")
    # retries only after a timeout or exception 06, never after exception 02
    polls_refusing = len([r for r in early if r.device_id == "refusing"])
    # (a poll may be in flight at the snapshot: its reading is not emitted yet)
    assert polls_refusing <= requests_at_heal[4] <= polls_refusing + 1
    polls_busy = len([r for r in early if r.device_id == "busy"])
    assert 2 * polls_busy <= requests_at_heal[5] <= 2 * polls_busy + 2  # retries = 1
    # backoff: dead devices were probed less often than the healthy one
    polls = {n: len([r for r in early if r.device_id == n]) for n in ("healthy", "silent")}
    assert polls["silent"] < 0.75 * polls["healthy"], polls
    # everyone recovered
    for name in names.values():
        assert collector.of(name)[-1].ok, name
        assert status.devices[name].state is DeviceState.UP


async def test_dropped_connection_reconnects_and_other_links_keep_polling(
    collector: Collector,
) -> None:
    async with FaultPeer({1: Unit(IMAGE)}) as good, FaultPeer({1: Unit(IMAGE)}) as flaky:
        good_link = TcpLink("127.0.0.1", good.port, timeout_s=0.5)
        flaky_link = TcpLink("127.0.0.1", flaky.port, timeout_s=0.5)
        steady = _device("steady", 1)
        async with (
            _bus(good_link, [steady], collector),
            _bus(flaky_link, [_device("dropper", 1)], collector) as flaky_status,
        ):
            await asyncio.sleep(0.6)
            flaky.units[1].mode = "drop"
            await asyncio.sleep(1.2)
            dropped = [r for r in collector.of("dropper") if not r.ok]
            flaky.units[1].mode = "ok"
            await asyncio.sleep(1.5)
    assert dropped and {r.quality for r in dropped} == {Quality.DISCONNECTED}
    assert all(not r.fields for r in dropped)
    assert collector.of("dropper")[-1].ok
    assert flaky_status.disconnects >= 1
    assert flaky_status.connects >= 2
    assert flaky.connections >= 2
    _assert_keeps_period(collector.of("steady"), steady)


async def test_dead_device_on_a_serial_line_is_backed_off(collector: Collector) -> None:
    # RTU over TCP is one request at a time, like RS-485: a silent device costs
    # the line its timeout, so after `down_after` failures it is probed rarely.
    units = {1: Unit(IMAGE), 2: Unit(IMAGE, mode="silent")}
    async with FaultPeer(units, framing="rtu") as peer:
        link = RtuOverTcpLink("127.0.0.1", peer.port, timeout_s=0.1)
        devices = [
            _device("healthy", 1, timeout_s=0.08),
            _device("dead", 2, timeout_s=0.08, retries=0, backoff_cap_s=1.0),
        ]
        async with _bus(link, devices, collector) as status:
            await asyncio.sleep(2.5)
            assert status.devices["dead"].state is DeviceState.BACKOFF
            dead_requests = units[2].requests
            healthy_requests = units[1].requests
            units[2].mode = "ok"
            await asyncio.sleep(1.6)
    healthy = collector.of("healthy")
    assert all(r.ok for r in healthy)
    # the healthy device may wait for one timeout of the dead one, never more
    phases = [(r.ts_ns / 1e9 - devices[0].poll_phase_s) % INTERVAL_S for r in healthy]
    assert max(phases) < 0.08 + PERIOD_TOLERANCE_S, phases
    assert statistics.median(phases) < 0.05
    dead = collector.of("dead")
    assert dead_requests < 0.75 * healthy_requests
    assert dead[-1].ok and status.devices["dead"].state is DeviceState.UP


async def test_device_without_optional_registers_reads_the_rest(collector: Collector) -> None:
    # An SDM630 without the tamper-counter block answers exception 02 for it:
    # the other blocks are still read (quality ok), the refused fields are left
    # out and the refused block is not asked again on every poll.
    sdm = load_profile("eastron_sdm630")
    image = register_image(sdm, {f.name: 1.0 for f in sdm.fields})
    for addr in range(0x300, 0x306):
        del image[4][addr]
    unit = Unit(image)
    async with FaultPeer({1: unit}) as peer:
        link = TcpLink("127.0.0.1", peer.port, timeout_s=0.5)
        async with _bus(link, [_device("sdm", 1, sdm)], collector):
            await asyncio.sleep(1.4)
    readings = collector.of("sdm")
    assert len(readings) >= 4
    assert all(r.ok for r in readings)
    assert all("magnet_events" not in r.fields and "voltage_l1_v" in r.fields for r in readings)
    blocks = 4  # see test_planner: three answered blocks + the refused one, asked once
    assert unit.requests == (blocks - 1) * len(readings) + 1


async def test_silent_connection_is_replaced(collector: Collector) -> None:
    # A device whose TCP connection stays open but carries nothing back (a
    # half-open link after a cable cut or a hung stack) gets a fresh connection.
    unit = Unit(IMAGE, mode="silent")
    async with FaultPeer({1: unit}) as peer:
        link = TcpLink("127.0.0.1", peer.port, timeout_s=0.5, reconnect_when_silent_s=0.6)
        dev = _device("hung", 1, down_after=100)  # keep polling every interval
        async with _bus(link, [dev], collector) as status:
            await asyncio.sleep(1.6)
            assert peer.connections >= 2
            unit.mode = "ok"
            await asyncio.sleep(0.8)
    assert {r.quality for r in collector.of("hung")[:3]} == {Quality.TIMEOUT}
    assert collector.of("hung")[-1].ok
    assert status.disconnects >= 1


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        d = min(8.0, 0.5 * 2**attempt)
        values = [backoff_s(attempt, base_s=0.5, cap_s=8.0, rng=rng) for _ in range(50)]
        assert all(d / 2 <= v <= d for v in values)
        assert len(set(values)) > 1


def test_polls_align_to_the_wall_clock() -> None:
    assert next_aligned_s(100.0, 10.0) == 110.0
    assert next_aligned_s(109.999, 10.0) == 110.0
    assert next_aligned_s(1000.2, 0.25) == pytest.approx(1000.25)
    # with a phase: the multiples of the interval shifted by it
    assert next_aligned_s(100.0, 10.0, 3.5) == 103.5
    assert next_aligned_s(103.5, 10.0, 3.5) == 113.5
    assert next_aligned_s(102.0, 10.0, 9.0) == 109.0
    assert next_aligned_s(1000.2, 0.25, 0.1) == pytest.approx(1000.35)
