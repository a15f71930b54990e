"""`meterwatch demo`: a whole gateway against simulated devices, with no external service.

What it does, in order:

1. starts the built-in simulators for the demo site (`simulators/scenarios/demo.toml`:
   a fuel station and a small utility district, some devices honest, some
   cheating, some drifting) on a free Modbus TCP port on loopback, and a private
   Mosquitto for the MQTT devices when one is installed (else those are left out);
2. builds an ordinary gateway config for them (embedded store, API on localhost,
   a fresh admin API key printed once);
3. replays the last `history_days` of the same simulation (the simulators'
   offline mode, same seed, so the values match what the devices serve) through
   the storage and the anomaly engine, so that the dashboard opens on a site
   with history and with the alerts that history earns;
4. runs the gateway live: the real drivers poll the simulators in real time.

Failure modes handled: no Mosquitto binary (MQTT devices are skipped, said
once), a taken API port (the error names it), and Ctrl-C/SIGTERM at any step
(the gateway drains and exits cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from drivers.codec import DataType
from drivers.profiles import Profile, ProfileProtocol, load_profile
from drivers.reading import DeviceKind, Quality, Reading
from gateway.alerts import AlertStatus
from gateway.commands.api_key import new_key
from gateway.config import Settings, parse_config
from gateway.runtime import Gateway, stop_on_signals
from simulators.offline import OfflineRun, generate
from simulators.serve import Simulation, serve

log = logging.getLogger("meterwatch.demo")

SCENARIO = "demo"
DAY_NS = 86_400 * 1_000_000_000
# Sample steps of the simulated devices (s).
STEP_S: dict[str, float] = {
    "dispenser_nozzle": 10.0,
    "tank_gauge": 60.0,
    "electricity": 30.0,
    "water": 60.0,
    "gas": 60.0,
}
# The gateway polls faster than the slow devices change, as it would in the field,
# so that every device shows up within seconds of the start.
POLL_S: dict[str, float] = {kind: min(step, 15.0) for kind, step in STEP_S.items()}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    port: int = 8080
    host: str = "127.0.0.1"
    data_dir: Path | None = None
    history_days: int = 3
    seed: int = 0
    mqtt: bool = True
    status_line: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")


@contextlib.asynccontextmanager
async def private_mosquitto(workdir: Path) -> AsyncIterator[tuple[str, int] | None]:
    """A throwaway Mosquitto on a free loopback port, or None when none is installed."""
    binary = _mosquitto_binary()
    if binary is None:
        log.warning("mosquitto is not installed: the demo's MQTT devices are left out")
        yield None
        return
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    # Its own session: Ctrl-C in the terminal reaches the demo, which then stops the
    # simulators' MQTT publishers before it stops this broker.
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield ("127.0.0.1", port)
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)


def demo_settings(
    sim: Simulation,
    *,
    data_dir: Path,
    api_host: str,
    api_port: int,
    key_sha256: str,
    mqtt: tuple[str, int] | None,
) -> Settings:
    """An ordinary gateway config for what `sim` serves."""
    buses: list[dict[str, Any]] = [
        {
            "id": "sim-modbus",
            "transport": "tcp",
            "host": sim.modbus_host,
            "port": sim.modbus_port,
            "timeout_s": 1.0,
        },
    ]
    if mqtt is not None:
        buses.append(
            {
                "id": "sim-mqtt",
                "transport": "mqtt",
                "host": mqtt[0],
                "port": mqtt[1],
                "client_id": f"meterwatch-demo-{mqtt[1]}",
            }
        )
    devices: list[dict[str, Any]] = []
    for d in sim.devices:
        dev: dict[str, Any] = {
            "id": d.id,
            "kind": d.kind,
            "profile": d.profile,
            "accuracy_class": d.accuracy_class,
        }
        if d.topic is not None:
            dev |= {"bus": "sim-mqtt", "topic": d.topic}
        else:
            dev |= {
                "bus": "sim-modbus",
                "unit_id": d.unit_id,
                "poll_interval_s": STEP_S.get(d.kind, 10.0),
            }
        devices.append(dev)
    groups = [
        {
            "id": g.id,
            "type": g.type,
            "reference": g.reference,
            "members": list(g.members),
            "technical_loss_pct": g.technical_loss_pct,
        }
        for g in sim.groups
    ]
    return parse_config(
        {
            "site": {"id": "demo", "name": "meterwatch demo site"},
            "buses": buses,
            "devices": devices,
            "groups": groups,
            "storage": {"backend": "embedded", "data_dir": str(data_dir)},
            "api": {
                "host": api_host,
                "port": api_port,
                "keys": [
                    {"name": "demo-admin", "role": "admin", "sites": ["*"], "sha256": key_sha256}
                ],
            },
            "anomaly": {"state_save_interval_s": 60},
        },
        source="demo",
    )


def _as_served(
    profile: Profile, name: str, values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """`values` at the resolution the device's registers carry (what a poll would read).

    Without this the seam between replayed history and live polling shows a
    float32-rounded register as having gone backwards.
    """
    if profile.protocol is not ProfileProtocol.MODBUS:
        return values
    spec = profile.field(name)
    raw = (values - spec.offset) / spec.scale
    if spec.data_type is DataType.F32:
        raw = raw.astype(np.float32).astype(np.float64)
    elif spec.data_type.is_integer:
        raw = np.round(raw)
    elif spec.data_type is not DataType.F64:
        return values
    return raw * spec.scale + spec.offset


def history_batches(
    run: OfflineRun, settings: Settings, *, until_ns: int, batch_ns: int = 3_600 * 10**9
) -> Iterator[list[Reading]]:
    """The offline run as readings, in time order, an hour at a time, up to `until_ns`.

    Only the fields each device's profile serves are kept, so the history looks
    like what the drivers read live.
    """
    served: dict[str, tuple[DeviceKind, tuple[str, ...]]] = {}
    columns: dict[str, dict[str, npt.NDArray[np.float64]]] = {}
    for dev in settings.devices:
        if dev.id in run.devices:
            profile = load_profile(dev.profile, kind=dev.kind)
            served[dev.id] = (dev.kind, profile.field_names)
            columns[dev.id] = {
                name: _as_served(profile, name, values)
                for name, values in run.devices[dev.id].fields.items()
                if name in profile.field_names
            }
    if not served:
        return
    start = min(int(run.devices[d].ts_ns[0]) for d in served if len(run.devices[d].ts_ns))
    for lo in range(start, until_ns, batch_ns):
        hi = min(lo + batch_ns, until_ns)
        batch: list[Reading] = []
        for dev_id, (kind, names) in served.items():
            stream = run.devices[dev_id]
            i0, i1 = (int(i) for i in np.searchsorted(stream.ts_ns, [lo, hi]))
            present = [n for n in names if n in columns[dev_id]]
            rows = zip(*(columns[dev_id][n][i0:i1].tolist() for n in present), strict=True)
            ts = stream.ts_ns[i0:i1].tolist()
            oks = stream.ok[i0:i1].tolist()
            for i, (t, ok, row) in enumerate(zip(ts, oks, rows, strict=True)):
                pairs = zip(present, row, strict=True)
                fields = {n: v for n, v in pairs if not math.isnan(v)} if ok else {}
                quality = Quality.OK if ok else Quality.TIMEOUT
                batch.append(Reading(dev_id, kind, t, i0 + i + 1, fields, quality))
        batch.sort(key=lambda r: r.ts_ns)
        if batch:
            yield batch


async def run_demo(options: DemoOptions, *, out: TextIO = sys.stdout) -> None:
    """Run the demo until cancelled or signalled."""
    with contextlib.ExitStack() as stack:
        if options.data_dir is None:
            data_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="meterwatch-demo-"))
            )
        else:
            data_dir = options.data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        await _run(options, data_dir, out)


async def _run(options: DemoOptions, data_dir: Path, out: TextIO) -> None:
    now = time.time_ns()
    midnight = now - now % DAY_NS
    start_ns = midnight - options.history_days * DAY_NS
    api_key = new_key()
    async with contextlib.AsyncExitStack() as stack:
        mqtt = (
            await stack.enter_async_context(private_mosquitto(data_dir)) if options.mqtt else None
        )
        sim = await stack.enter_async_context(
            serve(
                SCENARIO,
                modbus_port=0,
                mqtt=mqtt,
                speed=1.0,
                seed=options.seed,
                start_ns=start_ns,
                at_ns=now,
                step_s=STEP_S,
            )
        )
        settings = demo_settings(
            sim,
            data_dir=data_dir,
            api_host=options.host,
            api_port=options.port,
            key_sha256=hashlib.sha256(api_key.encode()).hexdigest(),
            mqtt=mqtt,
        )
        print(
            f"meterwatch demo: {len(settings.devices)} simulated devices "
            f"(Modbus TCP on 127.0.0.1:{sim.modbus_port}"
            + (f", MQTT on {mqtt[0]}:{mqtt[1]}" if mqtt else ", no MQTT")
            + ")",
            file=out,
        )
        for line in sim.describe():
            print("  " + line, file=out)

        history = None
        if options.history_days > 0:
            print(
                f"replaying {options.history_days} simulated days of history ...",
                file=out,
                flush=True,
            )
            run = await asyncio.to_thread(
                generate,
                SCENARIO,
                seed=options.seed,
                days=options.history_days + 1,
                step_s=STEP_S,
                start_ns=start_ns,
            )
            history = history_batches(run, settings, until_ns=now)
        gateway = Gateway(settings, history=history)
        stack.enter_context(stop_on_signals(gateway.stop))
        runner = asyncio.create_task(gateway.run(), name="gateway")
        ready = asyncio.create_task(gateway.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            ready.cancel()
            await runner
            return
        url = f"http://{options.host}:{gateway.api_port}"
        print(f"dashboard and API: {url}/   (health: {url}/health)", file=out)
        print(f"API key (admin, shown once): {api_key}", file=out)
        print("Ctrl-C stops the demo.", file=out, flush=True)
        status = asyncio.create_task(_status_line(gateway, out, tty=options.status_line))
        try:
            await runner
        finally:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status


async def _status_line(gateway: Gateway, out: TextIO, *, tty: bool) -> None:
    """One live line: devices up, readings/s, open alerts (a line per 10 s when not a TTY)."""
    interactive = tty and out.isatty()
    period_s = 1.0 if interactive else 10.0
    while True:
        parts = gateway.parts
        if parts is not None:
            counts = parts.status.counts()
            total = sum(counts.values())
            counts_by_status = await asyncio.to_thread(parts.alerts.counts)
            open_alerts = counts_by_status.get(AlertStatus.OPEN, 0)
            line = (
                f"devices up {counts.get('up', 0)}/{total}  "
                f"readings/s {parts.pipeline.readings_per_s():7.1f}  "
                f"open alerts {open_alerts}  "
                f"outbox {parts.storage.outbox.stats().points}"
            )
            if interactive:
                out.write("\r" + line.ljust(78))
            else:
                out.write(line + "\n")
            out.flush()
        await asyncio.sleep(period_s)
