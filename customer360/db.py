"""Database access shared by the CLI, the loader, the DAG and the streaming sink."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import psycopg2
import psycopg2.extensions

from customer360.errors import first_line
from customer360.settings import Settings, get_settings


class DatabaseUnavailableError(RuntimeError):
    """The configured PostgreSQL server cannot be reached."""


# What psycopg2 raises when a connection broke or the server ended it (and for a few failed
# statements, such as a cancelled one): such a connection is closed rather than lent again.
CONNECTION_FAILURES = (psycopg2.OperationalError, psycopg2.InterfaceError)


def connect(settings: Settings | None = None, **kwargs) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection, turning connection failures into one clear sentence."""
    settings = settings or get_settings()
    try:
        return psycopg2.connect(settings.dsn, connect_timeout=5, **kwargs)
    except psycopg2.OperationalError as exc:
        hint = " (start it with `c360 db start`)" if settings.uses_embedded_database else ""
        reason = first_line(exc, "connection refused")
        raise DatabaseUnavailableError(
            f"cannot reach PostgreSQL at {_redacted(settings.dsn)}{hint}: {reason}"
        ) from exc


class _ConnectionReuse:
    """Connections that finished transactions hand back, lent to the next ones: a load runs
    some thirty short transactions, and a new connection costs a server process and its
    catalog caches each time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()

    def borrow(self) -> psycopg2.extensions.connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self.settings)

    def give_back(self, conn: psycopg2.extensions.connection) -> None:
        if conn.closed:
            return
        with self._lock:
            self._idle.append(conn)

    def close_all(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


_reuse: ContextVar[_ConnectionReuse | None] = ContextVar("connection_reuse", default=None)


@contextmanager
def reused_connections(settings: Settings | None = None) -> Iterator[None]:
    """Within this block (and the threads started with its context), ``transaction`` reuses
    the connections of finished transactions; they are closed at the end."""
    reuse = _ConnectionReuse(settings or get_settings())
    token = _reuse.set(reuse)
    try:
        yield
    finally:
        _reuse.reset(token)
        reuse.close_all()


@contextmanager
def transaction(
    settings: Settings | None = None, reuse_connection: bool = True
) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in one transaction: committed on success, rolled back on any error.

    Within ``reused_connections`` it borrows a finished transaction's connection, unless
    ``reuse_connection`` is false; a connection that failed is closed, never lent again.
    """
    settings = settings or get_settings()
    reuse = _reuse.get() if reuse_connection else None
    if reuse is not None and reuse.settings.dsn != settings.dsn:
        reuse = None
    conn = reuse.borrow() if reuse else connect(settings)
    try:
        with conn.cursor() as cur:
            # Set-based loads sort and hash large sets: give them room in memory.
            cur.execute("set local work_mem = '256MB'")
            # The loader analyzes the tables it fills so that its next statements get good
            # plans; a sample of 3,000 rows does that for a tenth of the default's cost.
            cur.execute("set local default_statistics_target = 10")
            # The loader runs its steps side by side, each on its own connection; parallel
            # workers within a statement would only compete with them (and repeat work: each
            # worker builds the inner side of a join itself).
            cur.execute("set local max_parallel_workers_per_gather = 0")
            yield cur
        conn.commit()
    except CONNECTION_FAILURES:
        conn.close()
        raise
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    finally:
        if reuse:
            reuse.give_back(conn)
        else:
            conn.close()


def _redacted(dsn: str) -> str:
    """The URL without its password, safe to print."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
