"""Shared fixtures: one real embedded PostgreSQL server per test session, fresh databases on
it for tests that change the vault, and the demo data set generated and loaded once."""

from __future__ import annotations

import atexit
import itertools
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import psycopg2
import pytest

from customer360.embedded_db import EmbeddedServer
from customer360.generator import generate_dataset
from customer360.migrate import migrate
from customer360.pipeline import run_batch
from customer360.processes import free_port
from customer360.settings import Settings, get_settings

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def c360_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for the session: a private work dir and port, exported for subprocesses too."""
    work_dir = tmp_path_factory.mktemp("c360-work")
    overrides = {
        "C360_WORK_DIR": str(work_dir),
        "C360_EMBEDDED_PG_PORT": str(free_port()),
        "C360_DATA_DIR": str(work_dir / "data"),
    }
    saved = {name: os.environ.get(name) for name in [*overrides, "C360_DATABASE_URL"]}
    os.environ.update(overrides)
    os.environ.pop("C360_DATABASE_URL", None)
    get_settings.cache_clear()
    yield get_settings()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def embedded_server(c360_settings: Settings) -> Iterator[EmbeddedServer]:
    """The session's real PostgreSQL server, stopped at the end of the session."""
    server = EmbeddedServer(
        pgdata=Path(c360_settings.work_dir) / "postgres" / "pgdata",
        port=c360_settings.embedded_pg_port,
        database=c360_settings.embedded_pg_database,
    )
    server.start()
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])

    def stop() -> None:
        server.stop()
        # Should the data directory have gone meanwhile, pg_ctl cannot find the server: end
        # the postmaster by its process id (fast shutdown), if that is still our postgres.
        cmdline = Path(f"/proc/{postmaster}/cmdline")
        with suppress(OSError):
            if str(server.pgdata).encode() in cmdline.read_bytes():
                os.kill(postmaster, signal.SIGINT)

    # Stopped at the end of the session, and at the latest when this process exits.
    atexit.register(stop)
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def database(embedded_server: EmbeddedServer, c360_settings: Settings) -> Settings:
    """The session database with the schema applied."""
    migrate(c360_settings)
    return c360_settings


_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def make_database(
    embedded_server: EmbeddedServer, c360_settings: Settings
) -> Callable[[], Settings]:
    """A factory of brand-new migrated databases, for tests that change the vault."""

    def create() -> Settings:
        name = f"c360_test_{os.getpid()}_{next(_database_numbers)}"
        admin = psycopg2.connect(embedded_server.dsn.rsplit("/", 1)[0] + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
            cur.execute(f'create database "{name}"')
        admin.close()
        settings = c360_settings.model_copy(
            update={"database_url": embedded_server.dsn.rsplit("/", 1)[0] + f"/{name}"}
        )
        migrate(settings)
        return settings

    return create


@pytest.fixture(scope="session")
def demo_data_dir(c360_settings: Settings) -> Path:
    """The default-scale demo data set (seed 42), generated once."""
    out = Path(c360_settings.data_dir)
    generate_dataset(out, seed=42)
    return out


@pytest.fixture(scope="session")
def loaded_warehouse(database: Settings, demo_data_dir: Path) -> Settings:
    """The session database with the demo data loaded through the whole pipeline once."""
    run_batch(demo_data_dir, database)
    return database


@pytest.fixture
def db_cursor(database: Settings) -> Iterator[psycopg2.extensions.cursor]:
    """An autocommit cursor on the session database."""
    conn = psycopg2.connect(database.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        yield cur
    conn.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep screenshots and other artifacts (git-ignored)."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR
