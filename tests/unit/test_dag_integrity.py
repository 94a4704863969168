"""The customer_data_pipeline DAG as Airflow parses it, and the small pure helpers around it.

The DAG is parsed in a fresh interpreter, as Airflow's DAG processor does, with the database
settings pointing at a port where nothing listens: any database work at import time would fail
the import, and the modules it loaded show that the loader stayed out of the parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from customer360 import airflow_local, orchestration
from customer360.commands import airflow as airflow_commands
from customer360.errors import DeliveryMissingError
from customer360.settings import PROJECT_ROOT, Settings, get_settings

UNREACHABLE_DSN = "postgresql://nobody:secret@127.0.0.1:9/nowhere"

EXPECTED_UPSTREAM = {
    "start_batch": set(),
    "load_staging_customers": {"start_batch"},
    "load_staging_products": {"start_batch"},
    "load_staging_transactions": {"start_batch"},
    "quality_check_staging": {
        "start_batch",
        "load_staging_customers",
        "load_staging_products",
        "load_staging_transactions",
    },
    "load_hubs": {"start_batch", "quality_check_staging"},
    "load_links": {"start_batch", "load_hubs"},
    "load_satellites": {"start_batch", "load_hubs"},
    "reconcile_vault": {"start_batch", "load_links", "load_satellites"},
    "refresh_business_views": {"start_batch", "reconcile_vault"},
    "run_report": {"start_batch", "refresh_business_views"},
}

PARSE_SCRIPT = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.models.connection import Connection

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("customer_data_pipeline")
facts = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}}
if dag is not None:
    from customer360 import orchestration
    connection = Connection(conn_id="check", uri=os.environ["AIRFLOW_CONN_CUSTOMER360_POSTGRES"])
    facts.update(
        dag_ids=sorted(bag.dags),
        tags=sorted(dag.tags),
        owner=dag.owner,
        doc_md=dag.doc_md or "",
        catchup=dag.catchup,
        max_active_runs=dag.max_active_runs,
        paused_upon_creation=dag.is_paused_upon_creation,
        timetable=type(dag.timetable).__name__,
        cron=dag.timetable.expression,
        timezone=str(dag.timetable.timezone),
        deadlines=[
            {
                "reference": type(alert.reference).__name__,
                "interval_seconds": alert.interval.total_seconds(),
                "callback": alert.callback.path,
            }
            for alert in dag.deadline or []
        ],
        tasks={
            task.task_id: {
                "upstream": sorted(task.upstream_task_ids),
                "retries": task.retries,
                "backoff": task.retry_exponential_backoff,
                "timeout_seconds": task.execution_timeout.total_seconds()
                if task.execution_timeout else None,
                "retry_policy": task.retry_policy.serialize() if task.retry_policy else None,
                "on_failure": [
                    f"{c.__module__}.{c.__qualname__}" for c in task.on_failure_callback
                ],
            }
            for task in dag.tasks
        },
        connection_dsn=orchestration.dsn_from_connection(connection),
    )
facts["modules"] = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("customer360", "psycopg2", "pandas")
)
print("FACTS " + json.dumps(facts))
"""


@pytest.fixture(scope="module")
def parsed_dag(tmp_path_factory) -> dict:
    """What a fresh interpreter learns from parsing the dags folder."""
    work_dir = tmp_path_factory.mktemp("dag-parse")
    settings = Settings(work_dir=work_dir, database_url=UNREACHABLE_DSN)
    env = airflow_local.airflow_environment(
        settings, metadata_url=f"sqlite:///{work_dir / 'airflow.db'}"
    )
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(airflow_local.DAGS_FOLDER)],
        env=env,
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("FACTS ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("FACTS "))


def test_dag_imports_without_errors(parsed_dag):
    assert parsed_dag["import_errors"] == {}
    assert parsed_dag["dag_ids"] == ["customer_data_pipeline"]


def test_dag_does_no_database_work_and_no_heavy_imports_at_parse_time(parsed_dag):
    # The parse succeeded although the database is unreachable, and the loader,
    # the database driver and pandas were never imported.
    assert parsed_dag["import_errors"] == {}
    assert not [m for m in parsed_dag["modules"] if m.split(".")[0] in ("psycopg2", "pandas")]
    assert "customer360.pipeline" not in parsed_dag["modules"]
    assert "customer360.db" not in parsed_dag["modules"]


def test_dag_schedule_and_documentation(parsed_dag):
    assert "customer360" in parsed_dag["tags"]
    assert parsed_dag["owner"]
    assert "Customer 360 daily load" in parsed_dag["doc_md"]
    assert parsed_dag["catchup"] is False
    assert parsed_dag["max_active_runs"] == 1
    # Scheduled from the start: a paused DAG would never run the nightly load.
    assert parsed_dag["paused_upon_creation"] is False
    assert parsed_dag["cron"] == "0 0 * * *"
    assert parsed_dag["timezone"] == "UTC"


def test_dag_tasks_and_their_order(parsed_dag):
    upstream = {task: set(info["upstream"]) for task, info in parsed_dag["tasks"].items()}
    assert upstream == EXPECTED_UPSTREAM


def test_every_task_retries_with_backoff_timeout_and_failure_alert(parsed_dag):
    for task_id, info in parsed_dag["tasks"].items():
        assert info["retries"] >= 2, task_id
        assert info["backoff"] > 1, task_id
        assert info["timeout_seconds"] and info["timeout_seconds"] <= 15 * 60, task_id
        assert info["on_failure"] == ["customer360.orchestration.notify_task_failure"], task_id
        # A batch already loading and a late delivery are waited for; other errors a retry
        # cannot fix fail the task at once. The first matching rule decides.
        assert info["retry_policy"]["rules"] == [
            {
                "exception": "customer360.errors.BatchInProgressError",
                "action": "retry",
                "match_subclasses": True,
                "retry_delay": 300.0,
                "reason": "another batch is loading",
            },
            {
                "exception": "customer360.errors.DeliveryMissingError",
                "action": "retry",
                "match_subclasses": True,
                "retry_delay": 600.0,
                "reason": "the day's files have not arrived",
            },
            {
                "exception": "customer360.errors.UserFacingError",
                "action": "fail",
                "match_subclasses": True,
            },
        ], task_id


def test_fifteen_minute_deadline_alert(parsed_dag):
    assert parsed_dag["deadlines"] == [
        {
            "reference": "DagRunQueuedAtDeadline",
            "interval_seconds": 15 * 60,
            "callback": "customer360.orchestration.notify_deadline_missed",
        }
    ]


def test_connection_from_the_environment_points_at_the_configured_database(parsed_dag):
    assert parsed_dag["connection_dsn"] == UNREACHABLE_DSN


def test_airflow_environment_is_local_only(tmp_path):
    settings = Settings(work_dir=tmp_path, airflow_port=18123, database_url=UNREACHABLE_DSN)
    env = airflow_local.airflow_environment(settings, metadata_url="sqlite:////x/airflow.db")

    home = tmp_path.resolve() / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////x/airflow.db"
    assert (
        env["AIRFLOW_CONN_CUSTOMER360_POSTGRES"] == "postgres://nobody:secret@127.0.0.1:9/nowhere"
    )
    assert env["C360_DATABASE_URL"] == UNREACHABLE_DSN
    path = env["PATH"].split(":")
    assert path[:2] == [str(home / "bin"), str(Path(sys.executable).parent)]


def test_landing_directory_is_the_dated_folder_and_never_the_demo_data_instead(tmp_path):
    landing, demo = tmp_path / "landing", tmp_path / "demo"
    (landing / "2026-03-01").mkdir(parents=True)
    settings = Settings(work_dir=tmp_path, landing_dir=landing, data_dir=demo)

    assert orchestration.landing_directory(date(2026, 3, 1), settings) == landing / "2026-03-01"
    with pytest.raises(DeliveryMissingError, match="no delivery for 2026-03-02"):
        orchestration.landing_directory(date(2026, 3, 2), settings)
    no_landing = Settings(work_dir=tmp_path, landing_dir=None, data_dir=demo)
    assert orchestration.landing_directory(date(2026, 3, 1), no_landing) == demo


def test_dsn_from_connection_quotes_credentials():
    connection = SimpleNamespace(
        login="loader",
        password="p@ss/word",
        host="db.internal",
        port=5433,
        schema="warehouse",
        extra_dejson={"sslmode": "require"},
    )
    assert orchestration.dsn_from_connection(connection) == (
        "postgresql://loader:p%40ss%2Fword@db.internal:5433/warehouse?sslmode=require"
    )


def test_alerts_are_not_mailed_without_smtp(tmp_path):
    settings = Settings(work_dir=tmp_path, smtp_host=None, alert_email="team@example.com")
    assert orchestration.send_alert("subject", "body", settings) is False


def test_status_of_an_airflow_that_never_started(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("C360_WORK_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert airflow_commands.airflow_status(SimpleNamespace()) == 1
    finally:
        get_settings.cache_clear()
    assert "Airflow is not running" in capsys.readouterr().out
