"""Serve a scenario over the network: Modbus TCP, Modbus RTU over a pty, MQTT.

All Modbus devices answer on one TCP port by unit id (pymodbus server); the
same devices can also answer Modbus RTU on a pseudo-terminal pair made by
`socat` (the client end is a path such as ``/tmp/mw-rtu``). MQTT devices
publish JSON in the shape of their profile (Tasmota ``tele/<t>/SENSOR`` with
an ``ENERGY`` object and an ``LWT``, Shelly Gen2 ``status/em1:0`` and
``status/em1data:0``, or a flat object of canonical fields).

Registers are encoded through the drivers' profiles and codec
(`drivers.codec.encode`), so a driver decodes exactly the offline values
(to the type's resolution). Registers are refreshed lazily when a request
arrives and the device's sample has changed.

Failure modes handled: a device during `comm_loss` does not answer (the
client times out, as with a dead RS-485 node); an unknown unit id answers
exception 02; a value that does not fit its register type is logged once per
device and field and served as 0; a broker that is down or goes away is
retried with capped, jittered backoff while the Modbus side keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiomqtt
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from drivers.codec import EncodeError, encode
from drivers.profiles import PayloadDecoder, Profile, ProfileProtocol, load_profile
from simulators.catalogue import get_scenario
from simulators.engine import Sample, SimClock, SimEngine
from simulators.offline import with_overrides
from simulators.spec import DAY_S, NS_PER_S, GroundTruth, GroupSpec, Scenario, Transport

log = logging.getLogger("meterwatch.simulators")

__all__ = ["ServedDevice", "Simulation", "mqtt_payloads", "register_image", "serve"]


@dataclass(frozen=True, slots=True)
class ServedDevice:
    """A device as served: how a gateway would configure it."""

    id: str
    kind: str
    profile: str
    unit_id: int | None
    topic: str | None
    accuracy_class: str
    transport: str


# --- registers ---------------------------------------------------------------------------


def register_blocks(profile: Profile) -> dict[int, tuple[int, int]]:
    """Per function code (3, 4): (first address, register count) spanning the profile."""
    spans: dict[int, tuple[int, int]] = {}
    for f in profile.fields:
        lo, hi = spans.get(f.function, (f.address, f.end))
        spans[f.function] = (min(lo, f.address), max(hi, f.end))
    return {fc: (lo, hi - lo) for fc, (lo, hi) in spans.items()}


def register_image(
    profile: Profile, fields: dict[str, float], *, problems: set[str] | None = None
) -> dict[int, list[int]]:
    """The register blocks of `profile` holding `fields` (missing or unencodable: 0).

    Bit fields are OR-ed into their register after the whole-register fields,
    so a status word and its flags agree. Names of fields that could not be
    encoded are added to `problems`.
    """
    blocks = register_blocks(profile)
    image = {fc: [0] * count for fc, (_lo, count) in blocks.items()}
    ordered = sorted(profile.fields, key=lambda f: f.bit is not None)
    for f in ordered:
        value = fields.get(f.name)
        if value is None:
            continue
        try:
            regs = encode(value, f)
        except EncodeError:
            if problems is not None:
                problems.add(f.name)
            continue
        base = f.address - blocks[f.function][0]
        target = image[f.function]
        for k, r in enumerate(regs):
            target[base + k] = (target[base + k] | r) if f.bit is not None else r
    return image


class DeviceClock(StrEnum):
    """What the served devices' own clocks (`device_clock_s`) follow."""

    WALL = "wall"  # real time (plus any injected skew): no false skew at speed != 1
    SIMULATED = "simulated"  # the simulated clock (plus skew), as in the offline arrays


def device_clock_s(sample: Sample, engine: SimEngine, clock: DeviceClock) -> float:
    """The device's clock now: the chosen time base plus the sample's injected skew."""
    skew_s = sample.fields.get("device_clock_s", sample.ts_ns / NS_PER_S) - sample.ts_ns / NS_PER_S
    base_s = time.time() if clock is DeviceClock.WALL else engine.clock.now_ns() / NS_PER_S
    return float(math.floor(base_s + skew_s))


class _ModbusDevice:
    """A served Modbus device: refreshes its registers when its sample changes."""

    def __init__(
        self, engine: SimEngine, device_id: str, profile: Profile, *, clock: DeviceClock
    ) -> None:
        self.engine = engine
        self.device_id = device_id
        self.profile = profile
        self.clock = clock
        self.blocks = register_blocks(profile)
        self.last_index: dict[int, int] = {}
        self.reported: set[str] = set()
        self.clock_field = next((f for f in profile.fields if f.name == "device_clock_s"), None)

    def sim_device(self, unit_id: int) -> SimDevice:
        def block(fc: int) -> list[SimData]:
            if fc not in self.blocks:
                return [SimData(0, datatype=SimType.INVALID)]
            lo, count = self.blocks[fc]
            return [SimData(lo, count=count, values=0, datatype=SimType.REGISTERS)]

        bits = [SimData(0, values=False, datatype=SimType.BITS)]
        return SimDevice(
            id=unit_id,
            simdata=(bits, list(bits), block(3), block(4)),
            action=self.action,
        )

    async def action(  # noqa: PLR0917 (pymodbus calls it positionally)
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        fc = 3 if function_code in (3, 6, 16, 22, 23) else 4
        sample = self.engine.sample(self.device_id)
        if not sample.ok:
            # No answer at all: the client times out, as with a silent device.
            raise NoSuchIdException(f"{self.device_id} is silent (simulated comm loss)")
        if fc not in self.blocks:
            return
        if self.clock_field is not None and self.clock_field.function == fc:
            # A device clock ticks between samples: refreshed on every request.
            now_s = device_clock_s(sample, self.engine, self.clock)
            regs = encode(now_s, self.clock_field)
            at = self.clock_field.address - self.blocks[fc][0]
            registers[at : at + len(regs)] = regs
        if self.last_index.get(fc) == sample.index:
            return
        problems: set[str] = set()
        fields = sample.fields
        if self.clock_field is not None:
            fields = {**fields, "device_clock_s": device_clock_s(sample, self.engine, self.clock)}
        image = register_image(self.profile, fields, problems=problems)
        registers[: len(image[fc])] = image[fc]
        self.last_index[fc] = sample.index
        new = problems - self.reported
        if new:
            self.reported |= new
            log.warning(
                "%s: value(s) of %s do not fit the profile's register types; served as 0",
                self.device_id,
                ", ".join(sorted(new)),
            )


class _PipelinedHandler(ServerRequestHandler):
    """pymodbus's request handler, fixed for pipelined requests.

    The stock handler decodes one frame per received segment (the rest waits
    for the next segment), checks each request against the unit id of the
    last response, and keeps only the last decoded request for its deferred
    answer. The drivers pipeline up to 16 requests per connection, so here
    every complete frame in the buffer is decoded and answered by its own task.
    """

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        used_total = 0
        while used_total < len(data):
            try:
                used, pdu = self.framer.handleFrame(data[used_total:], 0, 0)
            except ModbusIOException as exc:
                response = ExceptionResponse(
                    0x00 if exc.fcode is None else exc.fcode,
                    exception_code=ExcCodes.ILLEGAL_FUNCTION,
                    device_id=exc.dev_id,
                    transaction=exc.transaction_id,
                )
                self.server_send(response, addr)  # type: ignore[no-untyped-call]
                return len(data)
            used_total += used
            if pdu is None:
                break  # an incomplete frame: wait for more bytes
            task = asyncio.get_running_loop().create_task(
                self._handle(pdu, addr), name="modbus-sim-request"
            )
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)
        return used_total

    async def _handle(self, pdu: Any, addr: Any) -> None:
        # handle_request reads last_pdu before and after the datastore call;
        # the datastore never yields, so no other request runs in between.
        self.last_pdu, self.last_addr = pdu, addr
        await self.handle_request()  # type: ignore[no-untyped-call]


_PENDING: set[asyncio.Task[None]] = set()


class _TcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _PipelinedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


class _SerialServer(ModbusSerialServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _PipelinedHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


# --- MQTT payloads --------------------------------------------------------------------------


def _put(obj: dict[str, Any], parts: tuple[str | int, ...], value: float) -> None:
    cur: Any = obj
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt: Any = value if last else ([] if isinstance(parts[i + 1], int) else {})
        if isinstance(part, int):
            while len(cur) <= part:
                cur.append(None)
            if last or cur[part] is None:
                cur[part] = nxt
            cur = cur[part]
        else:
            if last or part not in cur:
                cur[part] = nxt
            cur = cur[part]


def mqtt_payloads(profile: Profile, topic: str, sample: Sample) -> list[tuple[str, bytes]]:
    """(topic, payload) messages carrying `sample` in the shape of `profile`."""
    spec = profile.mqtt
    if spec is None:
        raise ValueError(f"profile {profile.name} is not an MQTT profile")
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sample.ts_ns / NS_PER_S))
    templates = [t for t in spec.topics if not t.endswith("/LWT")]
    docs: dict[str, dict[str, Any]] = {t: {} for t in templates}
    for f in spec.fields:
        if f.name not in sample.fields:
            continue
        raw = (sample.fields[f.name] - f.offset) / f.scale
        if spec.decoder is PayloadDecoder.SHELLY_GEN2 and len(templates) > 1:
            # counters go on em1data, instantaneous values on em1
            target = templates[1] if f.path.startswith("total_") else templates[0]
        else:
            target = templates[0]
        _put(docs[target], f.path_parts, raw)
    out = []
    for template, doc in docs.items():
        if not doc:
            continue
        message = {"Time": when, "ENERGY": doc} if spec.decoder is PayloadDecoder.TASMOTA else doc
        out.append((template.format(topic=topic), json.dumps(message).encode()))
    return out


# --- the simulation ----------------------------------------------------------------------


class Simulation:
    """A running simulation (from `serve`): what is served where, and its clock."""

    def __init__(self, scenario: Scenario, engine: SimEngine) -> None:
        self.scenario = scenario
        self.engine = engine
        self.modbus_port: int = 0
        self.modbus_host: str = "127.0.0.1"
        self.rtu_port: str | None = None
        self.devices: list[ServedDevice] = []
        self.groups: list[GroupSpec] = []
        self.truth: list[GroundTruth] = scenario.truth()
        self.mqtt_published = 0

    @property
    def clock(self) -> SimClock:
        return self.engine.clock

    def now_ns(self) -> int:
        """Current simulated time (ns since the epoch)."""
        return self.engine.clock.now_ns()

    def set_time(self, at_ns: int, *, speed: float | None = None) -> None:
        """Jump the simulated clock to `at_ns` (and optionally change its speed)."""
        self.engine.clock.set(at_ns, speed=speed)

    def sample(self, device_id: str, at_ns: int | None = None) -> Sample:
        """What `device_id` shows now (or at simulated time `at_ns`)."""
        return self.engine.sample(device_id, at_ns)

    def describe(self) -> list[str]:
        """Human-readable lines: where each device is served."""
        lines = []
        for d in self.devices:
            where = (
                f"unit {d.unit_id} on tcp://{self.modbus_host}:{self.modbus_port}"
                + (f" and rtu {self.rtu_port}" if self.rtu_port else "")
                if d.transport == Transport.MODBUS
                else f"mqtt topic {d.topic}"
            )
            lines.append(
                f"{d.id:<14} {d.kind:<17} {d.profile:<15} class {d.accuracy_class:<6} {where}"
            )
        return lines


def _today_midnight_ns() -> int:
    now = time.time()
    return int(now - now % DAY_S) * NS_PER_S


def _all_exist(*paths: str) -> bool:
    return all(os.path.exists(p) for p in paths)


async def _start_rtu(
    devices: list[SimDevice], link: str, *, baudrate: int
) -> tuple[_SerialServer, asyncio.subprocess.Process, str]:
    """A socat pty pair; the server on one end, `link` (a symlink) is the client end."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed; it is needed for Modbus RTU over a pty")
    tmp = tempfile.mkdtemp(prefix="mw-rtu-")
    server_end = os.path.join(tmp, "server")
    proc = await asyncio.create_subprocess_exec(
        socat,
        f"pty,raw,echo=0,link={server_end}",
        f"pty,raw,echo=0,link={link}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(100):
        if await asyncio.to_thread(_all_exist, server_end, link):
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"socat did not create the pty pair {server_end} / {link}")
    try:
        server = _SerialServer(
            devices, port=server_end, baudrate=baudrate, ignore_missing_devices=True
        )
        await server.serve_forever(background=True)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return server, proc, server_end


async def _publish_loop(
    sim: Simulation,
    engine: SimEngine,
    host: str,
    port: int,
    targets: Sequence[tuple[str, str, Profile]],
    *,
    period_s: float,
    clock: DeviceClock,
) -> None:
    """Publish every MQTT device's sample when it changes, and at least every `period_s`."""
    rng = random.Random()  # noqa: S311 (backoff jitter, not cryptography)
    attempt = 0
    tasmota = {
        dev_id: topic
        for dev_id, topic, p in targets
        if p.mqtt is not None and p.mqtt.decoder is PayloadDecoder.TASMOTA
    }
    while True:
        try:
            client_id = f"mw-sim-{os.getpid()}-{id(sim):x}"
            async with aiomqtt.Client(host, port, identifier=client_id) as client:
                if attempt:
                    log.info("simulator MQTT publisher reconnected to %s:%s", host, port)
                attempt = 0
                online: dict[str, bool] = {}
                last: dict[str, tuple[int, float]] = {}
                while True:
                    now = time.monotonic()
                    for dev_id, topic, profile in targets:
                        sample = engine.sample(dev_id)
                        if dev_id in tasmota and online.get(dev_id) != sample.ok:
                            # Tasmota's availability topic (the broker sends its
                            # last will "Offline" for a real device that drops off)
                            state = b"Online" if sample.ok else b"Offline"
                            await client.publish(f"tele/{topic}/LWT", state, qos=1, retain=True)
                            online[dev_id] = sample.ok
                        if not sample.ok:
                            continue
                        prev = last.get(dev_id)
                        if prev and prev[0] == sample.index and now - prev[1] < period_s:
                            continue
                        if "device_clock_s" in sample.fields:
                            now_s = device_clock_s(sample, engine, clock)
                            sample = replace(
                                sample, fields={**sample.fields, "device_clock_s": now_s}
                            )
                        for t, payload in mqtt_payloads(profile, topic, sample):
                            await client.publish(t, payload, qos=1)
                            sim.mqtt_published += 1
                        last[dev_id] = (sample.index, now)
                    await asyncio.sleep(0.1)
        except aiomqtt.MqttError as exc:
            if attempt == 0:
                log.warning("simulator MQTT publisher: broker %s:%s: %s", host, port, exc)
            attempt += 1
            await asyncio.sleep(min(10.0, 0.2 * 2**attempt) * (0.5 + rng.random()))


@contextlib.asynccontextmanager
async def serve(
    scenario_or_site: str | Path | Scenario,
    *,
    modbus_port: int = 0,
    mqtt: tuple[str, int] | None = None,
    speed: float = 1.0,
    seed: int = 0,
    host: str = "127.0.0.1",
    start_ns: int | None = None,
    at_ns: int | None = None,
    rtu_link: str | None = None,
    rtu_baudrate: int = 19200,
    mqtt_period_s: float = 5.0,
    step_s: dict[str, float] | None = None,
    device_clock: DeviceClock | str = DeviceClock.WALL,
) -> AsyncIterator[Simulation]:
    """Serve `scenario_or_site` (catalogue name, bundled file, path or Scenario) while inside.

    `start_ns` is the run start (day 0 of the scenario; default: today 00:00
    UTC) and `at_ns` the simulated time to begin at (default: now when the
    run starts today, else the run start). `speed` is simulated seconds per
    real second (0 = frozen; `Simulation.set_time` moves it). `modbus_port` 0
    picks a free port (read `sim.modbus_port`). `rtu_link` is the path where
    the client end of a Modbus RTU pty appears. MQTT devices publish to
    `mqtt` = (host, port) when given, else they are not served.
    `device_clock` is what the devices' clock registers follow: ``wall``
    (default; real time plus any injected skew, so a fast simulation raises
    no false clock-skew alarms) or ``simulated`` (the simulated clock, as in
    the offline arrays). Either ticks between samples.
    """
    clock_mode = DeviceClock(device_clock)
    scn = get_scenario(scenario_or_site)
    run_start = _today_midnight_ns() if start_ns is None else start_ns
    scn = with_overrides(scn, start_ns=run_start, step_s=step_s)
    if at_ns is None:
        at_ns = time.time_ns() if start_ns is None else run_start
    engine = SimEngine(scn, seed=seed, clock=SimClock(at_ns, speed=speed))
    await asyncio.to_thread(engine.warm)  # days before `at_ns`, off the event loop
    sim = Simulation(scn, engine)
    sim.modbus_host = host
    sim_devices: list[SimDevice] = []
    mqtt_targets: list[tuple[str, str, Profile]] = []
    for spec in scn.devices:
        profile = load_profile(spec.profile, kind=spec.kind)
        if spec.transport is Transport.MQTT or profile.protocol is ProfileProtocol.MQTT:
            if mqtt is None:
                continue
            topic = spec.topic or spec.id
            mqtt_targets.append((spec.id, topic, profile))
            sim.devices.append(
                ServedDevice(
                    spec.id,
                    spec.kind.value,
                    spec.profile,
                    None,
                    topic,
                    spec.accuracy_class,
                    Transport.MQTT.value,
                )
            )
            continue
        if spec.unit_id is None:
            raise ValueError(f"scenario {scn.name}: Modbus device {spec.id} has no unit_id")
        sim_devices.append(
            _ModbusDevice(engine, spec.id, profile, clock=clock_mode).sim_device(spec.unit_id)
        )
        sim.devices.append(
            ServedDevice(
                spec.id,
                spec.kind.value,
                spec.profile,
                spec.unit_id,
                None,
                spec.accuracy_class,
                Transport.MODBUS.value,
            )
        )
    served = {d.id for d in sim.devices}
    sim.groups = [
        g for g in scn.groups if g.reference in served and all(m in served for m in g.members)
    ]
    sim.truth = [t for t in scn.truth() if t.device_id in served]

    tcp: _TcpServer | None = None
    rtu: tuple[_SerialServer, asyncio.subprocess.Process, str] | None = None
    publisher: asyncio.Task[None] | None = None
    try:
        if sim_devices:
            catch_all = SimDevice(id=0, simdata=[SimData(0, datatype=SimType.INVALID)])
            tcp = _TcpServer(
                [*sim_devices, catch_all], address=(host, modbus_port), ignore_missing_devices=True
            )
            try:
                await tcp.serve_forever(background=True)
            except RuntimeError:
                sockets = None
            else:
                sockets = getattr(tcp.transport, "sockets", None)
            if not sockets:
                raise OSError(
                    f"Modbus server could not listen on {host}:{modbus_port} "
                    "(address in use or not local?)"
                )
            sim.modbus_port = int(sockets[0].getsockname()[1])
            if rtu_link is not None:
                rtu = await _start_rtu(sim_devices, rtu_link, baudrate=rtu_baudrate)
                sim.rtu_port = rtu_link
        if mqtt_targets and mqtt is not None:
            # A plain named task, not a TaskGroup: a TaskGroup around the `yield`
            # would wrap the caller's own exceptions in an ExceptionGroup.
            publisher = asyncio.create_task(
                _publish_loop(
                    sim,
                    engine,
                    mqtt[0],
                    mqtt[1],
                    mqtt_targets,
                    period_s=mqtt_period_s,
                    clock=clock_mode,
                ),
                name="simulator-mqtt-publisher",
            )
            publisher.add_done_callback(_report_crash)
        yield sim
    finally:
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        if tcp is not None:
            await tcp.shutdown()  # type: ignore[no-untyped-call]
        if rtu is not None:
            server, proc, server_end = rtu
            await server.shutdown()  # type: ignore[no-untyped-call]
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            shutil.rmtree(os.path.dirname(server_end), ignore_errors=True)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator MQTT publisher stopped: %r", task.exception())
