"""`meterwatch check-config FILE`: validate a config and list every problem."""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, load_config

HELP = "validate a config file; print every problem with its path, exit 1 if any"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="TOML config file")


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{args.file}: OK — site {settings.site.id}, {len(settings.buses)} bus(es), "
        f"{len(settings.devices)} device(s), {len(settings.groups)} balance group(s), "
        f"storage {settings.storage.backend.value}"
    )
    return 0
