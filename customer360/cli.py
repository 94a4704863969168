"""The ``c360`` command: one entry point for every routine of the platform.

Each area of the platform keeps its subcommands in ``customer360/commands/<area>.py``,
which exposes ``add_commands(subparsers)``; this module only wires them together and
turns expected failures into one clear line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from customer360.db import DatabaseUnavailableError
from customer360.embedded_db import EmbeddedDatabaseError
from customer360.errors import UserFacingError

COMMAND_MODULES = [
    "customer360.commands.airflow",
    "customer360.commands.api",
    "customer360.commands.database",
    "customer360.commands.demo",
    "customer360.commands.generate",
    "customer360.commands.streaming",
    "customer360.commands.warehouse",
]

EXPECTED_FAILURES = (
    UserFacingError,
    DatabaseUnavailableError,
    EmbeddedDatabaseError,
    FileNotFoundError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c360", description="Customer 360 data platform: warehouse, API, Airflow, streaming."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args) or 0
    except EXPECTED_FAILURES as exc:
        print(f"c360: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
