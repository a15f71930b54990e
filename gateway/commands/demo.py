"""`meterwatch demo`: simulated fuel station and utility district, real drivers, live API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from gateway.logs import setup_logging

HELP = (
    "run the gateway against built-in simulators (a fuel station and a utility district) "
    "with the embedded store, API and dashboard on localhost; no external service needed"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="API/dashboard port (0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="API/dashboard address")
    parser.add_argument("--data-dir", type=Path, help="keep data here (default: a temp dir)")
    parser.add_argument(
        "--history-days",
        type=int,
        default=3,
        help="simulated days of history to replay before going live",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--no-mqtt", action="store_true", help="leave the MQTT devices out")
    parser.add_argument("--no-status", action="store_true", help="no live status line")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def main(args: argparse.Namespace) -> int:
    setup_logging(level=args.log_level)
    from gateway.demo import DemoOptions, run_demo

    options = DemoOptions(
        port=args.port,
        host=args.host,
        data_dir=args.data_dir,
        history_days=max(0, args.history_days),
        seed=args.seed,
        mqtt=not args.no_mqtt,
        status_line=not args.no_status,
    )
    from gateway.runtime import StartupError

    try:
        asyncio.run(run_demo(options))
    except StartupError as exc:
        print(f"demo: {exc} (choose another with --port)", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger("meterwatch").exception("the demo stopped on an error")
        return 1
    return 0
