"""The `meterwatch` console command.

Each subcommand lives in its own module under `gateway.commands` and exposes
`HELP`, `add_arguments(parser)` and `main(args) -> int`. A module is imported
only when its command runs, so a slow import (numpy, FastAPI) never delays
`check-config` or `--help` more than needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

# command name -> module under gateway.commands
COMMANDS: dict[str, str] = {
    "run": "run",
    "demo": "demo",
    "check-config": "check_config",
    "read": "read",
    "simulate": "simulate",
    "eval": "eval",
    "ledger": "ledger",
    "api-key": "api_key",
}


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"gateway.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"gateway.commands.{module}":
            return None  # not built yet
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterwatch",
        description="Edge gateway for legal metrology: polls meters and dispensers, "
        "flags cheating and drift, keeps evidence.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
