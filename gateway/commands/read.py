"""`meterwatch read`: read a Modbus device once and print what a profile (or one field) gives.

For installers at the cabinet: is the wiring right, is the unit id right, is
this the right profile, which word/byte order does this float use?

    meterwatch read --host 10.0.0.5 --unit 3 --profile eastron_sdm630
    meterwatch read --serial /dev/ttyUSB0 --baudrate 9600 --unit 7 \\
        --address 0x48 --function 4 --type f32 --guess-order --raw
    meterwatch read --host gw --transport rtu_over_tcp --unit 2 --profile water_meter --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from drivers.codec import DataType, Order, spec_problem
from drivers.errors import DriverError, ProfileError
from drivers.links import Parity, RtuOverTcpLink, SerialLink, TcpLink
from drivers.probe import ProbeResult, guess_orders, open_client, plausible, probe
from drivers.profiles import ModbusField, ProfileProtocol, load_profile

HELP = "read a Modbus device once with a profile or a single field spec (installer probe)"


def _int(text: str) -> int:
    return int(text, 0)  # accepts 72, 0x48, 0o110


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("link")
    where.add_argument("--transport", choices=["tcp", "rtu_over_tcp", "rtu"], default=None,
                       help="default: rtu with --serial, else tcp")
    where.add_argument("--host", help="device or gateway address (tcp, rtu_over_tcp)")
    where.add_argument("--port", type=int, default=502)
    where.add_argument("--serial", help="serial port (rtu), e.g. /dev/ttyUSB0")
    where.add_argument("--baudrate", type=int, default=9600)
    where.add_argument("--parity", choices=[p.value for p in Parity], default="N")
    where.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    where.add_argument("--unit", type=_int, default=1, help="unit (slave) id, default 1")
    where.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    what = parser.add_argument_group("what to read: a profile, or one field")
    what.add_argument("--profile", help="profile name (see --profile-dir)")
    what.add_argument("--profile-dir", action="append", default=[], help="extra profile dir")
    what.add_argument("--fields", help="comma-separated subset of the profile's fields")
    what.add_argument("--address", type=_int, help="field address as the manual prints it")
    what.add_argument("--base", type=_int, default=0,
                      help="addressing base of --address: 0, 1, 30001, 40001 (default 0)")
    what.add_argument("--function", type=int, choices=[3, 4], default=3)
    what.add_argument("--type", choices=[t.value for t in DataType if t is not DataType.STRING],
                      default="f32")
    what.add_argument("--order", choices=[o.value for o in Order], default="ABCD")
    what.add_argument("--scale", type=float, default=1.0)
    what.add_argument("--offset", type=float, default=0.0)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument("--raw", action="store_true", help="also print the raw registers")
    out.add_argument("--guess-order", action="store_true",
                     help="decode 32/64-bit fields in all four orders and mark plausible ones")


def _link(args: argparse.Namespace) -> TcpLink | RtuOverTcpLink | SerialLink:
    transport = args.transport or ("rtu" if args.serial else "tcp")
    if transport == "rtu":
        if not args.serial:
            raise SystemExit("meterwatch read: --serial is required for --transport rtu")
        return SerialLink(args.serial, baudrate=args.baudrate, parity=args.parity,
                          stopbits=args.stopbits, timeout_s=args.timeout)
    if not args.host:
        raise SystemExit(f"meterwatch read: --host is required for --transport {transport}")
    if transport == "rtu_over_tcp":
        return RtuOverTcpLink(args.host, args.port, timeout_s=args.timeout)
    return TcpLink(args.host, args.port, timeout_s=args.timeout)


def _fields(args: argparse.Namespace) -> list[ModbusField]:
    if args.profile and args.address is not None:
        raise SystemExit("meterwatch read: give --profile or --address, not both")
    if args.profile:
        profile = load_profile(args.profile, extra_dirs=args.profile_dir)
        if profile.protocol is not ProfileProtocol.MODBUS:
            raise SystemExit(f"meterwatch read: {args.profile} is an MQTT profile")
        fields = list(profile.fields)
        if args.fields:
            wanted = [n.strip() for n in args.fields.split(",") if n.strip()]
            fields = [profile.field(n) for n in wanted]
        return fields
    if args.address is None:
        raise SystemExit("meterwatch read: give --profile NAME or --address ADDR")
    wire = args.address - args.base
    if wire < 0:
        raise SystemExit(f"meterwatch read: --address {args.address} is below --base {args.base}")
    try:
        f = ModbusField(name="value", function=args.function, address=wire,
                        data_type=DataType(args.type), order=Order(args.order),
                        scale=args.scale, offset=args.offset)
    except ValueError as exc:
        raise SystemExit(f"meterwatch read: {exc}") from None
    problem = spec_problem(f)
    if problem:
        raise SystemExit(f"meterwatch read: {problem}")
    return [f]


def _guesses(result: ProbeResult, fields: list[ModbusField]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for br in result.blocks:
        if br.registers is None:
            continue
        for f, off in zip(br.block.fields, br.block.offsets, strict=True):
            if f.register_count < 2 or f.bit is not None:
                continue
            regs = br.registers[off // 2 : off // 2 + f.register_count]
            out[f.name] = {
                o.value: {"value": v, "plausible": plausible(v)}
                for o, v in guess_orders(regs, f).items()
            }
    return out


def _report(args: argparse.Namespace, result: ProbeResult, fields: list[ModbusField]) -> int:
    units = {f.name: f.unit for f in fields}
    guesses = _guesses(result, fields) if args.guess_order else {}
    if args.json:
        doc: dict[str, Any] = {
            "unit_id": args.unit,
            "fields": {n: {"value": v, "unit": units.get(n, "")} for n, v in result.fields.items()},
            "errors": result.errors,
        }
        if args.raw:
            doc["raw"] = [
                {"function": b.block.function, "address": b.block.address,
                 "count": b.block.count, "registers": b.registers, "error": b.error}
                for b in result.blocks
            ]
        if args.guess_order:
            doc["guess_order"] = guesses
        print(json.dumps(doc, indent=2))
    else:
        width = max([len(f.name) for f in fields] + [5])
        print(f"{'field':<{width}}  {'value':>16}  unit")
        for f in fields:
            if f.name in result.fields:
                print(f"{f.name:<{width}}  {result.fields[f.name]:>16.6g}  {f.unit}")
            else:
                print(f"{f.name:<{width}}  {'-':>16}  {result.errors.get(f.name, '')}")
        if args.raw:
            print("\nraw registers")
            for b in result.blocks:
                head = f"fc{b.block.function:02d} 0x{b.block.address:04X}+{b.block.count}"
                body = " ".join(f"{r:04X}" for r in b.registers or []) or f"({b.error})"
                print(f"  {head}: {body}")
        if args.guess_order:
            print("\nword/byte order guesses (* = plausible)")
            for name, per_order in guesses.items():
                cells = "  ".join(
                    f"{o}={g['value']:.6g}{'*' if g['plausible'] else ' '}"
                    for o, g in per_order.items()
                )
                print(f"  {name:<{width}}  {cells}")
    return 0 if not result.errors else 2


async def _run(args: argparse.Namespace, fields: list[ModbusField]) -> ProbeResult:
    client = await open_client(_link(args))
    try:
        return await probe(client, fields, unit_id=args.unit, timeout_s=args.timeout)
    finally:
        await client.close()


def main(args: argparse.Namespace) -> int:
    try:
        fields = _fields(args)
        result = asyncio.run(_run(args, fields))
    except ProfileError as exc:
        print(f"meterwatch read: {exc}", file=sys.stderr)
        return 1
    except DriverError as exc:
        print(f"meterwatch read: {exc}", file=sys.stderr)
        return 1
    return _report(args, result, fields)
