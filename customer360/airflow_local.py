"""A real local Airflow for the platform's DAGs: ``airflow standalone`` under the work directory.

``airflow standalone`` runs the API server (with the UI), the scheduler, the DAG processor and
the triggerer. Everything it writes lives in ``<work_dir>/airflow`` (git-ignored); its DAGs
folder is the repository's ``dags/``; its metadata database is a database named ``airflow`` on
the platform's PostgreSQL server (SQLite in the Airflow home when that database cannot be
created); and the connection ``customer360_postgres`` is derived from the same settings the CLI
uses, so the DAG loads into the warehouse the CLI shows.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from customer360.errors import UserFacingError
from customer360.processes import command_line, group_alive, port_in_use, signal_group
from customer360.settings import PROJECT_ROOT, Settings, get_settings

DAG_ID = "customer_data_pipeline"
CONNECTION_ID = "customer360_postgres"
METADATA_DATABASE = "airflow"
DAGS_FOLDER = PROJECT_ROOT / "dags"

# A known login for a local, loopback-only development instance; Airflow's SimpleAuthManager
# reads users from the config and their passwords from a JSON file in the Airflow home.
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"

DEFAULT_START_TIMEOUT = 240.0
DEFAULT_STOP_TIMEOUT = 30.0
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


@dataclass(frozen=True)
class AirflowStatus:
    """What is known about the local Airflow: its process, its address and its health."""

    home: Path
    url: str
    pid: int | None
    healthy: bool
    components: dict[str, str]

    @property
    def running(self) -> bool:
        """Whether our ``airflow standalone`` process group is alive."""
        return self.pid is not None


def airflow_home(settings: Settings | None = None) -> Path:
    """The Airflow home: configuration, logs and pid file, inside the platform's work directory."""
    settings = settings or get_settings()
    return settings.work_dir / "airflow"


def base_url(settings: Settings | None = None) -> str:
    """The address of the API server and the UI."""
    settings = settings or get_settings()
    return f"http://127.0.0.1:{settings.airflow_port}"


def connection_uri(settings: Settings | None = None) -> str:
    """The ``customer360_postgres`` connection as an Airflow connection URI."""
    settings = settings or get_settings()
    parts = urllib.parse.urlsplit(settings.dsn)
    # Airflow names the PostgreSQL connection type "postgres"; the rest of the URL is libpq's.
    return urllib.parse.urlunsplit(("postgres", parts.netloc, parts.path, parts.query, ""))


def metadata_database_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL of Airflow's own metadata database, created on first use.

    A database ``airflow`` next to the warehouse lets the scheduler run tasks in parallel; when
    the server refuses to create it (a configured server without that privilege), Airflow falls
    back to SQLite in its home, which runs the same DAG one task at a time.
    """
    import psycopg2

    from customer360.db import connect

    settings = settings or get_settings()
    parts = urllib.parse.urlsplit(settings.dsn)
    try:
        conn = connect(settings)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (METADATA_DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'create database "{METADATA_DATABASE}"')
        finally:
            conn.close()
    except psycopg2.Error:
        return f"sqlite:///{airflow_home(settings) / 'airflow.db'}"
    return urllib.parse.urlunsplit(
        ("postgresql+psycopg2", parts.netloc, f"/{METADATA_DATABASE}", parts.query, "")
    )


def airflow_environment(settings: Settings | None = None, metadata_url: str | None = None) -> dict:
    """The environment every Airflow process of the platform runs with.

    It carries the ``C360_*`` settings through to the task processes, puts this virtual
    environment's ``bin`` first on ``PATH`` (``airflow standalone`` starts its components as
    ``airflow`` subprocesses) and configures Airflow entirely through ``AIRFLOW__*`` variables.
    """
    settings = settings or get_settings()
    home = airflow_home(settings)
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        {
            "PATH": os.pathsep.join([str(_shim_dir(home)), venv_bin, env.get("PATH", "")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # The DAG runs at most three tasks at once; each executor slot is a process.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(_passwords_file(home)),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": base_url(settings),
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret_key"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or metadata_database_url(settings),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": connection_uri(settings),
            # The settings the task processes read (absolute, so their cwd does not matter).
            "C360_WORK_DIR": str(settings.work_dir),
            "C360_EMBEDDED_PG_PORT": str(settings.embedded_pg_port),
            "C360_EMBEDDED_PG_DATABASE": settings.embedded_pg_database,
            "C360_DATA_DIR": str(settings.data_dir),
            "C360_AIRFLOW_PORT": str(settings.airflow_port),
        }
    )
    if settings.database_url:
        env["C360_DATABASE_URL"] = settings.database_url
    if settings.landing_dir:
        env["C360_LANDING_DIR"] = str(settings.landing_dir)
    for noisy in ("AIRFLOW_CONFIG", "AIRFLOW__CORE__UNIT_TEST_MODE"):
        env.pop(noisy, None)
    return env


def prepare_home(settings: Settings | None = None) -> Path:
    """Create the Airflow home: the admin's password file and the ``airflow`` launcher shim.

    ``airflow standalone`` starts its components as ``airflow <component>`` found on ``PATH``.
    The shim adds ``--skip-serve-logs`` to the scheduler and the triggerer: their log servers
    bind every network interface and a fixed port, and a single-machine Airflow reads task logs
    from its own disk anyway. Safe to call again.
    """
    home = airflow_home(settings)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    _passwords_file(home).write_text(json.dumps({ADMIN_USERNAME: ADMIN_PASSWORD}) + "\n")
    shim = _shim_dir(home) / "airflow"
    shim.parent.mkdir(exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    shim.write_text(
        "#!/bin/sh\n"
        "# Written by customer360.airflow_local: run standalone's components without log servers.\n"
        'case "$1" in\n'
        f'  scheduler|triggerer) exec "{airflow}" "$@" --skip-serve-logs ;;\n'
        "esac\n"
        f'exec "{airflow}" "$@"\n'
    )
    shim.chmod(0o755)
    return home


def start(
    settings: Settings | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    progress=None,
) -> AirflowStatus:
    """Start ``airflow standalone`` in the background and wait until the DAG can be triggered.

    The warehouse database is started (when embedded) and migrated first, so the DAG has a schema
    to load into. Starting an already running Airflow only waits for it to be healthy.
    """
    from customer360.embedded_db import server_for_settings
    from customer360.migrate import migrate

    settings = settings or get_settings()
    say = progress or (lambda message: None)
    if settings.uses_embedded_database:
        server_for_settings(settings).start()
    migrate(settings)
    home = prepare_home(settings)
    pid = _running_pid(home)
    if pid is None:
        if port_in_use("127.0.0.1", settings.airflow_port):
            raise UserFacingError(
                f"port {settings.airflow_port} is already in use; stop what listens there or set"
                " C360_AIRFLOW_PORT to a free port"
            )
        env = airflow_environment(settings)
        say(f"starting airflow standalone (home {home}, log {_log_file(home)})")
        with open(_log_file(home), "ab") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), "standalone"],
                env=env,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() ends every component and task with it.
                start_new_session=True,
            )
        _pid_file(home).write_text(str(process.pid))
        pid = process.pid
    else:
        say(f"airflow standalone already running (pid {pid})")
    _wait_until_ready(settings, home, pid, timeout, say)
    return status(settings)


def stop(settings: Settings | None = None, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
    """Stop the local Airflow and every process it started; False when none was running."""
    home = airflow_home(settings)
    pid = _running_pid(home)
    _pid_file(home).unlink(missing_ok=True)
    if pid is None:
        return False
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pid):
        signal_group(pid, signal.SIGKILL)
    return True


def status(settings: Settings | None = None) -> AirflowStatus:
    """The local Airflow's process and the health its API server reports."""
    settings = settings or get_settings()
    home = airflow_home(settings)
    pid = _running_pid(home)
    components: dict[str, str] = {}
    if pid is not None:
        try:
            health = AirflowClient(base_url(settings)).health()
            components = {name: info.get("status", "unknown") for name, info in health.items()}
        except AirflowApiError:
            components = {}
    healthy = bool(components) and all(state == "healthy" for state in components.values())
    return AirflowStatus(home, base_url(settings), pid, healthy, components)


class AirflowApiError(RuntimeError):
    """The Airflow REST API could not be reached or refused a request."""


class AirflowClient:
    """A small client of Airflow's REST API v2 with SimpleAuthManager token authentication."""

    def __init__(
        self,
        url: str,
        username: str = ADMIN_USERNAME,
        password: str = ADMIN_PASSWORD,
        request_timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.request_timeout = request_timeout
        self._token: str | None = None

    def health(self) -> dict[str, Any]:
        """Health of the metadata database, scheduler, triggerer and DAG processor."""
        return self._request("GET", "/api/v2/monitor/health", authenticated=False)

    def token(self) -> str:
        """A JWT access token for the configured user (``POST /auth/token``)."""
        if self._token is None:
            body = {"username": self.username, "password": self.password}
            self._token = self._request("POST", "/auth/token", body, authenticated=False)[
                "access_token"
            ]
        return self._token

    def dag(self, dag_id: str = DAG_ID) -> dict[str, Any]:
        """The DAG as the API server knows it; fails until the DAG processor has parsed it."""
        return self._request("GET", f"/api/v2/dags/{dag_id}")

    def set_paused(self, paused: bool, dag_id: str = DAG_ID) -> dict[str, Any]:
        """Pause or unpause a DAG; a paused DAG's runs stay queued."""
        return self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(
        self, dag_id: str = DAG_ID, logical_date: str | None = None, conf: dict | None = None
    ) -> dict[str, Any]:
        """Create a DAG run; ``logical_date`` is an ISO timestamp with a time zone, or None."""
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, Any]:
        """One DAG run, with its state."""
        quoted = urllib.parse.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        """The task instances of one DAG run, with their states."""
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances"
        return self._request("GET", path)["task_instances"]

    def wait_for_run(
        self, run_id: str, dag_id: str = DAG_ID, timeout: float = 900.0, poll: float = 2.0
    ) -> dict[str, Any]:
        """Poll a DAG run until it succeeds or fails; raise when it is still going at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(run_id, dag_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"DAG run {run_id} is still {run['state']} after {timeout:.0f} s"
                )
            time.sleep(poll)

    def _request(
        self, method: str, path: str, body: dict | None = None, authenticated: bool = True
    ) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if authenticated:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise AirflowApiError(f"{method} {path} returned {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowApiError(f"cannot reach Airflow at {self.url}: {exc}") from exc


def _wait_until_ready(settings: Settings, home: Path, pid: int, timeout: float, say) -> None:
    """Wait for healthy components and for the DAG to be parsed, or explain why not."""
    client = AirflowClient(base_url(settings))
    deadline = time.monotonic() + timeout
    stage = "waiting for the API server"
    while time.monotonic() < deadline:
        if not group_alive(pid):
            _pid_file(home).unlink(missing_ok=True)
            raise UserFacingError(
                f"airflow standalone exited during startup; see {_log_file(home)}:"
                f" {_log_tail(home)}"
            )
        try:
            health = client.health()
            unhealthy = [name for name, info in health.items() if info.get("status") != "healthy"]
            if unhealthy:
                stage = f"waiting for {', '.join(sorted(unhealthy))}"
            else:
                stage = f"waiting for the DAG processor to parse {DAG_ID}"
                client.dag(DAG_ID)
                return
        except AirflowApiError:
            pass
        time.sleep(1.0)
    raise UserFacingError(
        f"Airflow was not ready after {timeout:.0f} s ({stage}); see {_log_file(home)}"
    )


def _secret(home: Path, name: str) -> str:
    """A random secret made once per Airflow home, so restarts keep sessions and tokens valid."""
    path = home / f".{name}"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


def _shim_dir(home: Path) -> Path:
    return home / "bin"


def _passwords_file(home: Path) -> Path:
    return home / "simple_auth_manager_passwords.json.generated"


def _pid_file(home: Path) -> Path:
    return home / "standalone.pid"


def _log_file(home: Path) -> Path:
    return home / "standalone.log"


def _log_tail(home: Path, lines: int = 5) -> str:
    if not _log_file(home).exists():
        return "no log written"
    tail = _log_file(home).read_text(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(line.strip() for line in tail)


def _running_pid(home: Path) -> int | None:
    """The pid of our ``airflow standalone`` if it still runs (a stale pid file is ignored)."""
    try:
        pid = int(_pid_file(home).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not group_alive(pid):
        return None
    arguments = command_line(pid)
    if arguments is None:
        # The leader has gone while its group lives on; the group is still ours to stop.
        return pid
    return pid if any("airflow" in argument for argument in arguments) else None
