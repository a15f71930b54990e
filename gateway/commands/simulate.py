"""`meterwatch simulate FILE`: serve a simulated site and print what is served where.

FILE is a scenario file (see ``simulators/scenarios/demo.toml``), the name
of a bundled one (``demo``) or a catalogue scenario (``over_registration_1pct``).
Its ``[serve]`` table gives the defaults (port, speed, seed, MQTT broker);
options override them. Runs until interrupted (or for ``--duration-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

HELP = "serve a simulated site (Modbus TCP/RTU, MQTT) with its cheating and drifting devices"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="scenario file, bundled name or catalogue name")
    parser.add_argument("--list", action="store_true", help="list the known scenarios and exit")
    parser.add_argument("--port", type=int, help="Modbus TCP port (0 = any free port)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--speed", type=float, help="simulated seconds per real second")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="broker for the MQTT devices")
    parser.add_argument("--no-mqtt", action="store_true", help="do not serve MQTT devices")
    parser.add_argument("--rtu-link", metavar="PATH", help="also serve Modbus RTU on a pty here")
    parser.add_argument(
        "--start", metavar="DATE", help="run start, ISO date (default: today 00:00 UTC)"
    )
    parser.add_argument("--duration-s", type=float, help="stop after this many real seconds")


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


async def _run(args: argparse.Namespace, opts: dict[str, Any]) -> int:
    from simulators.serve import serve

    start_ns = None
    if args.start:
        start = datetime.fromisoformat(args.start)
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        start_ns = int(start.timestamp()) * 1_000_000_000
    async with serve(
        args.file,
        modbus_port=int(opts.get("modbus_port", 0)),
        host=str(opts.get("host", "127.0.0.1")),
        mqtt=opts.get("mqtt"),
        speed=float(opts.get("speed", 1.0)),
        seed=int(opts.get("seed", 0)),
        rtu_link=opts.get("rtu_link"),
        mqtt_period_s=float(opts.get("mqtt_period_s", 5.0)),
        start_ns=start_ns,
    ) as sim:
        scn = sim.scenario
        print(f"scenario {scn.name}: {scn.description}")
        sim_now = datetime.fromtimestamp(sim.now_ns() / 1e9, UTC).isoformat(timespec="seconds")
        print(f"simulated time {sim_now}, speed x{sim.clock.speed:g}, seed {sim.engine.seed}")
        if sim.modbus_port:
            print(
                f"Modbus TCP on {sim.modbus_host}:{sim.modbus_port}"
                + (f", Modbus RTU on {sim.rtu_port}" if sim.rtu_port else "")
            )
        if opts.get("mqtt"):
            host, port = opts["mqtt"]
            print(f"MQTT publishing to {host}:{port}")
        print("devices:")
        for line in sim.describe():
            print(f"  {line}")
        if sim.groups:
            print("balance groups:")
            for g in sim.groups:
                loss = (
                    f" (technical loss {g.technical_loss_pct:g} %)" if g.technical_loss_pct else ""
                )
                print(f"  {g.id}: {g.type} {g.reference} -> {', '.join(g.members)}{loss}")
        print("ground truth:")
        if not sim.truth:
            print("  (none: every device honest)")
        for t in sim.truth:
            when = datetime.fromtimestamp(t.start_ns / 1e9, UTC).isoformat(timespec="minutes")
            size = "" if t.magnitude is None else f" magnitude {t.magnitude:g}"
            print(f"  {t.device_id}: {t.label} from {when}{size}")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
        while not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
            if deadline is not None and time.monotonic() >= deadline:
                break
        print("stopped")
    return 0


def main(args: argparse.Namespace) -> int:
    from simulators.catalogue import scenario_names, serve_options
    from simulators.spec import ScenarioError

    if args.list:
        for name in scenario_names():
            print(name)
        return 0
    if not args.file:
        print("meterwatch simulate: give a scenario FILE (or --list)", file=sys.stderr)
        return 2
    try:
        opts = serve_options(args.file)
        if args.port is not None:
            opts["modbus_port"] = args.port
        for key in ("host", "speed", "seed", "rtu_link"):
            if getattr(args, key) is not None:
                opts[key] = getattr(args, key)
        if args.mqtt:
            opts["mqtt"] = args.mqtt
        opts["mqtt"] = (
            None if args.no_mqtt or not opts.get("mqtt") else _host_port(str(opts["mqtt"]))
        )
        return asyncio.run(_run(args, opts))
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"meterwatch simulate: {exc}", file=sys.stderr)
        return 1
