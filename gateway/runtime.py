"""The gateway runtime: one asyncio process, named tasks in one TaskGroup.

Tasks: one per bus (`bus:<id>`: a TCP endpoint's devices poll in parallel, a
serial bus strictly one request at a time, an MQTT broker one client), the
`pipeline` (outbox, anomaly engine, alerts), the storage forwarder
(`storage`), the `anomaly-state` saver, alert `delivery`, and the `api`
server.

Shutdown (SIGTERM, Ctrl-C, or `Gateway.stop()`): the bus tasks are cancelled
first so no new readings arrive; the pipeline drains its queue into the
outbox and the engine; the anomaly state is saved; the forwarder gets a
bounded time to flush the outbox (whatever it cannot flush stays on disk for
the next start); then the API stops. A task that crashes is logged and stops
the process with an error, so that systemd restarts it rather than leaving it
running half-alive.

Failure modes handled here: a device profile that cannot be loaded (the
device is left out, logged with its config path; the rest runs), a data
directory that cannot be created (a clear `RuntimeError` at start), and the
API port being taken (the error names host and port).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import uvicorn

from anomaly.finding import Finding
from drivers.bus import Link, run_bus
from drivers.errors import ProfileError
from drivers.links import (
    MqttLink,
    PolledDevice,
    RtuOverTcpLink,
    SerialLink,
    SubscribedDevice,
    TcpLink,
)
from drivers.profiles import Profile, load_profile
from drivers.reading import Reading
from drivers.status import BusStatus
from drivers.status import DeviceState as DriverState
from drivers.status import DeviceStatus as DriverDeviceStatus
from gateway.alerts import AlertStore, FindingIntake
from gateway.analysis import AnalysisStage, engine_from_settings
from gateway.api.status import DeviceState, DeviceStatus
from gateway.config import (
    DeviceSettings,
    ModbusTcpBus,
    MqttBus,
    SerialBus,
    Settings,
    Transport,
)
from gateway.delivery import AlertDelivery
from gateway.pipeline import Pipeline
from gateway.storage import Storage, open_storage

log = logging.getLogger("meterwatch.runtime")

STATE_FILE = "anomaly_state.bin"


class StartupError(RuntimeError):
    """The gateway cannot start; the message names the setting and the cause."""


# --- config -> driver specs ------------------------------------------------------------


def link_for(bus: ModbusTcpBus | SerialBus | MqttBus, *, site_id: str) -> Link:
    """The driver link for a configured bus."""
    if isinstance(bus, SerialBus):
        return SerialLink(
            bus.serial_port,
            baudrate=bus.baudrate,
            parity=bus.parity.value,
            stopbits=bus.stopbits,
            bytesize=bus.bytesize,
            timeout_s=bus.timeout_s,
            inter_frame_delay_s=bus.inter_frame_delay_s,
        )
    if isinstance(bus, MqttBus):
        return MqttLink(
            bus.host,
            bus.port,
            protocol=bus.protocol.value,
            # A fixed client id keeps the broker-side session across restarts (QoS 1).
            client_id=bus.client_id or f"meterwatch-{site_id}-{bus.id}",
            username=bus.username,
            password=bus.password.get_secret_value() if bus.password else None,
            tls=bus.tls,
            ca_file=bus.ca_file,
            keepalive_s=bus.keepalive_s,
            qos=bus.qos,
        )
    if bus.transport is Transport.RTU_OVER_TCP:
        return RtuOverTcpLink(bus.host, bus.port, timeout_s=bus.timeout_s)
    return TcpLink(
        bus.host,
        bus.port,
        timeout_s=bus.timeout_s,
        max_in_flight=bus.max_in_flight,
        max_connections=bus.max_connections,
    )


def driver_device(
    settings: Settings, device: DeviceSettings, profile: Profile
) -> PolledDevice | SubscribedDevice:
    """The driver's view of a configured device."""
    if device.topic is not None and isinstance(settings.bus(device.bus), MqttBus):
        return SubscribedDevice(device.id, profile, device.topic)
    return PolledDevice(
        device.id,
        profile,
        device.unit_id if device.unit_id is not None else 1,
        poll_interval_s=device.poll_interval_s,
        timeout_s=settings.device_timeout_s(device),
        retries=device.retries,
        max_block_registers=device.max_block_registers,
        max_gap_registers=device.max_gap_registers,
        phase_s=device.poll_phase_s,
    )


def load_profiles(settings: Settings) -> tuple[dict[str, Profile], list[str]]:
    """Every enabled device's profile; problems are returned, not raised."""
    profiles: dict[str, Profile] = {}
    problems: list[str] = []
    for i, dev in enumerate(settings.devices):
        if not dev.enabled:
            continue
        try:
            profiles[dev.id] = load_profile(
                dev.profile, extra_dirs=tuple(settings.profile_dirs), kind=dev.kind
            )
        except ProfileError as exc:
            problems.append(f"devices[{i}].profile ({dev.id}): {exc}")
    return profiles, problems


# --- live status for the API -----------------------------------------------------------

_STATE = {
    DriverState.UP: DeviceState.UP,
    DriverState.DOWN: DeviceState.DOWN,
    DriverState.BACKOFF: DeviceState.BACKOFF,
    DriverState.UNKNOWN: DeviceState.UNKNOWN,
}


class StatusBoard:
    """The runtime's live device status (the API's `StatusProvider`).

    Modbus devices are polled, so the drivers know when one is down. An MQTT
    device is only heard from, so silence is judged here: with no good
    message for three of its expected publish periods (`poll_interval_s`, at
    least 30 s) it counts as down, and the transition is logged once each way.
    """

    def __init__(self, settings: Settings, *, silent_min_s: float = 30.0) -> None:
        self._settings = settings
        self.buses: dict[str, BusStatus] = {b.id: BusStatus() for b in settings.buses}
        self._last: dict[str, Reading] = {}
        self._started_ns = time.time_ns()
        self._silent_after_ns = {
            d.id: int(max(3 * d.poll_interval_s, silent_min_s) * 1e9)
            for d in settings.devices
            if isinstance(settings.bus(d.bus), MqttBus)
        }
        self._silent: set[str] = set()

    def observe(self, reading: Reading) -> None:
        self._last[reading.device_id] = reading

    def _state(self, device_id: str, st: DriverDeviceStatus | None, now_ns: int) -> DeviceState:
        state = _STATE[st.state] if st is not None else DeviceState.UNKNOWN
        limit = self._silent_after_ns.get(device_id)
        if limit is None:
            return state
        heard_ns = st.last_ok_ns if st is not None and st.last_ok_ns else self._started_ns
        silent = now_ns - heard_ns > limit
        if silent != (device_id in self._silent):
            if silent:
                self._silent.add(device_id)
                log.warning("device silent", extra={"device": device_id, "silent_s": limit / 1e9})
            else:
                self._silent.discard(device_id)
                log.info("device heard again", extra={"device": device_id})
        return DeviceState.DOWN if silent else state

    def devices(self) -> list[DeviceStatus]:
        now = time.time_ns()
        out: list[DeviceStatus] = []
        for dev in self._settings.devices:
            if not dev.enabled:
                continue
            st = self.buses[dev.bus].devices.get(dev.id)
            last = self._last.get(dev.id)
            out.append(
                DeviceStatus(
                    id=dev.id,
                    kind=dev.kind,
                    site=self._settings.device_site(dev),
                    profile=dev.profile,
                    state=self._state(dev.id, st, now),
                    last_ok_ns=st.last_ok_ns if st is not None else None,
                    last_quality=last.quality if last is not None else None,
                    seq=last.seq if last is not None else 0,
                    errors=(st.errors + st.malformed) if st is not None else 0,
                )
            )
        return out

    def counts(self) -> dict[str, int]:
        """Devices per state, for the status line and /health."""
        out: dict[str, int] = {}
        for d in self.devices():
            out[d.state.value] = out.get(d.state.value, 0) + 1
        return out


# --- the gateway -----------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Parts:
    """What the running gateway is made of (for the demo, tests and the status line)."""

    storage: Storage
    alerts: AlertStore
    analysis: AnalysisStage
    pipeline: Pipeline
    status: StatusBoard
    api_server: uvicorn.Server | None


class Gateway:
    """Runs the configured gateway until `stop()` (or a signal) is received."""

    def __init__(
        self,
        settings: Settings,
        *,
        drain_timeout_s: float = 10.0,
        history: Iterable[Sequence[Reading]] | None = None,
    ) -> None:
        """`history`: batches of past readings (in time order) to store and analyse
        before live polling starts (the demo replays simulated history this way)."""
        self.settings = settings
        self._history = history
        self.drain_timeout_s = drain_timeout_s
        self._stop = asyncio.Event()
        self.parts: Parts | None = None
        self.api_port: int | None = None
        self.ready = asyncio.Event()
        self._close_streams: Callable[[], None] = lambda: None

    def stop(self) -> None:
        """Begin an orderly shutdown (idempotent; safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings
        data_dir = Path(settings.storage.data_dir)
        try:
            await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"storage.data_dir {data_dir}: {exc.strerror or exc}") from None

        profiles, problems = load_profiles(settings)
        for problem in problems:
            log.error("device left out: %s", problem)

        status = StatusBoard(settings)
        storage = await open_storage(
            settings.storage,
            site_id=settings.site.id,
            device_profiles={d.id: d.profile for d in settings.devices},
        )
        alerts = AlertStore.from_settings(settings)
        delivery = AlertDelivery.from_settings(settings)
        delivery.attach(alerts)
        analysis = AnalysisStage(engine_from_settings(settings), state_path=data_dir / STATE_FILE)
        site_of = {d.id: settings.device_site(d) for d in settings.devices}
        intake = FindingIntake(
            alerts,
            readings_for=analysis.held_readings,
            site_of=lambda f: site_of.get(f.device, settings.site.id),
        )

        async def on_findings(found: Sequence[Finding]) -> None:
            await intake([analysis.fit_window(f) for f in found])

        async def persist(batch: Sequence[Reading]) -> None:
            await storage.append(batch)

        pipeline = Pipeline(
            persist=persist,
            analyze=analysis if settings.anomaly.enabled else None,
            on_findings=on_findings,
        )

        def sink(reading: Reading) -> None:
            status.observe(reading)
            pipeline.submit(reading)

        api_server = self._api_server(alerts, storage, status) if settings.api.enabled else None
        # Bound here, not by uvicorn: a taken port is then a start-up error that
        # names the address, not a SystemExit inside a task.
        try:
            api_socket = _listen(settings.api.host, settings.api.port) if api_server else None
        except StartupError:
            await storage.close(drain_timeout_s=0)
            delivery.close()
            alerts.close()
            raise
        self.parts = Parts(storage, alerts, analysis, pipeline, status, api_server)
        try:
            async with asyncio.TaskGroup() as tg:
                store_task = tg.create_task(storage.run(), name="storage")
                delivery_task = tg.create_task(delivery.run(), name="delivery")
                ledger_task = tg.create_task(
                    alerts.ledger.run_checkpoints(), name="ledger-checkpoints"
                )
                await self._replay_history(pipeline)
                saver_task = tg.create_task(self._save_state_loop(analysis), name="anomaly-state")
                pipe_task = tg.create_task(pipeline.run(), name="pipeline")
                bus_tasks = self._start_buses(tg, profiles, sink, status, pipeline)
                api_task = (
                    tg.create_task(self._serve_api(api_server, api_socket), name="api")
                    if api_server is not None
                    else None
                )
                if api_server is None:
                    self.ready.set()
                await self._stop.wait()
                log.info("stopping: draining readings")
                for task in bus_tasks:
                    task.cancel()
                await asyncio.gather(*bus_tasks, return_exceptions=True)
                pipeline.close()
                await pipe_task
                saver_task.cancel()
                await analysis.save_state()
                store_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await store_task
                delivery_task.cancel()
                ledger_task.cancel()
                if api_server is not None and api_task is not None:
                    # Open event streams would hold uvicorn's shutdown forever.
                    self._close_streams()
                    api_server.should_exit = True
                    await api_task
        finally:
            if api_socket is not None:
                api_socket.close()
            await storage.close(drain_timeout_s=self.drain_timeout_s)
            delivery.close()
            alerts.close()
            log.info("stopped")

    async def _replay_history(self, pipeline: Pipeline) -> None:
        if self._history is None:
            return
        count = 0
        iterator = iter(self._history)
        while not self._stop.is_set():
            batch = await asyncio.to_thread(next, iterator, None)
            if batch is None:
                break
            await pipeline.process_now(batch)
            count += len(batch)
        log.info("history replayed", extra={"readings": count})

    def _start_buses(
        self,
        tg: asyncio.TaskGroup,
        profiles: dict[str, Profile],
        sink: Callable[[Reading], None],
        status: StatusBoard,
        durable: Pipeline,
    ) -> list[asyncio.Task[None]]:
        settings = self.settings
        tasks: list[asyncio.Task[None]] = []
        for bus in settings.buses:
            devices = [
                driver_device(settings, d, profiles[d.id])
                for d in settings.devices
                if d.bus == bus.id and d.enabled and d.id in profiles
            ]
            if not devices:
                continue
            link = link_for(bus, site_id=settings.site.id)
            tasks.append(
                tg.create_task(
                    run_bus(
                        link,
                        devices,  # type: ignore[arg-type]
                        sink,
                        status=status.buses[bus.id],
                        durable=durable,
                    ),
                    name=f"bus:{bus.id}",
                )
            )
        return tasks

    async def _save_state_loop(self, analysis: AnalysisStage) -> None:
        while True:
            await asyncio.sleep(self.settings.anomaly.state_save_interval_s)
            try:
                await analysis.save_state()
            except Exception:
                log.exception("saving the anomaly state failed; retrying at the next interval")

    def _api_server(
        self, alerts: AlertStore, storage: Storage, status: StatusBoard
    ) -> uvicorn.Server:
        from prometheus_client import CollectorRegistry

        from gateway.api import create_app

        registry = CollectorRegistry()
        registry.register(storage.collector())
        app = create_app(
            settings=self.settings,
            alerts=alerts,
            ledger=alerts.ledger,
            store=storage.store,
            status=status,
            metrics_registry=registry,
        )
        self._close_streams = app.state.close_streams
        config = uvicorn.Config(
            app,
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        return _ApiServer(config)

    async def _serve_api(self, server: uvicorn.Server, sock: socket.socket | None) -> None:
        assert sock is not None
        self.api_port = int(sock.getsockname()[1])
        serve = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serve.done():  # noqa: ASYNC110 - uvicorn has only a flag
            await asyncio.sleep(0.02)
        self.ready.set()
        await serve


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket for the API; a clear error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise StartupError(f"api: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime drains first, then stops the API."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call `stop` on SIGTERM or SIGINT (Ctrl-C) while inside; restore the defaults after."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_until_signalled(gateway: Gateway) -> None:
    """Run `gateway`, stopping it in order on SIGTERM or SIGINT (Ctrl-C)."""
    with stop_on_signals(gateway.stop):
        await gateway.run()
