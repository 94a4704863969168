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

import psycopg2
import psycopg2.errors
import pydantic

from customer360.db import DatabaseUnavailableError
from customer360.embedded_db import EmbeddedDatabaseError
from customer360.errors import UserFacingError, first_line

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
)

# What PostgreSQL says about a schema object `c360 migrate` creates when it is not there.
SCHEMA_NOT_APPLIED = (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedFunction)


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
    sys.excepthook = _quiet_about_a_copy_the_server_ended
    try:
        return args.handler(args) or 0
    except EXPECTED_FAILURES as exc:
        return _print_error(str(exc))
    except SCHEMA_NOT_APPLIED as exc:
        return _print_error(
            f"{first_line(exc, type(exc).__name__)}: the database's schema is missing or"
            " out of date; apply it with `c360 migrate`"
        )
    except psycopg2.OperationalError as exc:
        return _print_error(_database_failure(exc))
    except pydantic.ValidationError as exc:
        return _print_error(_settings_failure(exc))
    except OSError as exc:
        return _print_error(_file_failure(exc))
    except KeyboardInterrupt:
        return 130


def _quiet_about_a_copy_the_server_ended(exc_type, exc, traceback) -> None:
    """psycopg2 prints (through this hook) the error of a COPY whose session the server ended
    while it asked for the next chunk, then raises it to the command, which reports it in one
    line: that print is only logged."""
    if isinstance(exc, SystemError) and isinstance(exc.__cause__, psycopg2.OperationalError):
        logging.getLogger(__name__).debug("COPY ended by the server: %s", exc.__cause__)
        return
    sys.__excepthook__(exc_type, exc, traceback)


def _settings_failure(exc: pydantic.ValidationError) -> str:
    """A setting with a value it cannot take, named as the environment variable that sets it."""
    problems = "; ".join(
        f"C360_{'_'.join(map(str, error['loc'])).upper()} {error['input']!r}: {error['msg']}"
        for error in exc.errors()
    )
    return f"settings: {problems}"


def _print_error(message: str) -> int:
    print(f"c360: error: {message}", file=sys.stderr)
    return 1


def _file_failure(exc: OSError) -> str:
    """One sentence for a file the command could not read or write: the problem and the path."""
    if exc.filename is None:
        return first_line(exc, type(exc).__name__)
    path = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else exc.filename
    return f"{exc.strerror or type(exc).__name__}: {path}"


def _database_failure(exc: psycopg2.OperationalError) -> str:
    """One sentence for an error PostgreSQL or the connection to it raised mid-command."""
    reason = first_line(exc, type(exc).__name__)
    # No SQLSTATE: the connection broke; class 08 and 57P: the server ended the connection.
    if exc.pgcode is None or exc.pgcode.startswith(("08", "57P")):
        return f"lost the connection to PostgreSQL during the command: {reason}"
    return f"PostgreSQL stopped the command: {reason}"


if __name__ == "__main__":
    sys.exit(main())
