"""`meterwatch run -c FILE`: run the gateway until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from gateway.config import ConfigError, load_config
from gateway.logs import setup_logging

HELP = "run the gateway with a config file until stopped (SIGTERM/Ctrl-C drain and flush)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="TOML config file")
    parser.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(
        level=args.log_level or settings.logging.level,
        json_format=args.json_logs or settings.logging.json_format,
    )
    from gateway.runtime import Gateway, StartupError, run_until_signalled

    gateway = Gateway(settings)
    try:
        asyncio.run(run_until_signalled(gateway))
    except StartupError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger("meterwatch").exception("the gateway stopped on an error")
        return 1
    return 0
