"""The customer_data_pipeline DAG run by Airflow's own ``dag.test()`` against the embedded
PostgreSQL: the vault it loads, a re-run of the same date, a run for a landing folder, and a
breached threshold that must stop the run at the quality check."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from customer360 import airflow_local
from customer360.generator import generate_next_day
from customer360.pipeline import run_batch
from customer360.settings import PROJECT_ROOT, Settings
from customer360.vault import VAULT_TABLES
from tests.expected import GHOST_ID, expected_warehouse

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1800)]

DAG_FILE = PROJECT_ROOT / "dags" / "customer_data_pipeline.py"
RUN_DATE = "2026-01-15"
STAGING_TASKS = ["load_staging_customers", "load_staging_products", "load_staging_transactions"]
VAULT_TASKS = [
    "load_hubs",
    "load_links",
    "load_satellites",
    "reconcile_vault",
    "refresh_business_views",
    "run_report",
]
ALL_TASKS = ["start_batch", *STAGING_TASKS, "quality_check_staging", *VAULT_TASKS]


@pytest.fixture(scope="module")
def dag_settings(make_database, demo_data_dir: Path, tmp_path_factory) -> Settings:
    """A fresh warehouse database and an Airflow home of this module's own."""
    return make_database().model_copy(
        update={
            "work_dir": tmp_path_factory.mktemp("dag-test-work"),
            "data_dir": demo_data_dir,
            "landing_dir": None,
        }
    )


@pytest.fixture(scope="module")
def landing_root(tmp_path_factory) -> Path:
    """A landing directory for the runs that set C360_LANDING_DIR."""
    return tmp_path_factory.mktemp("landing")


@pytest.fixture(scope="module")
def airflow_env(dag_settings: Settings) -> dict[str, str]:
    """The environment the platform runs Airflow with, on a migrated SQLite metadata database."""
    home = airflow_local.prepare_home(dag_settings)
    env = airflow_local.airflow_environment(
        dag_settings, metadata_url=f"sqlite:///{home / 'airflow.db'}"
    )
    migrated = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
    return env


@pytest.fixture(scope="module")
def first_run(airflow_env, dag_settings: Settings) -> subprocess.CompletedProcess:
    """The DAG's first run for RUN_DATE, which loads the demo data into the empty vault."""
    return run_dag(airflow_env, RUN_DATE)


def run_dag(env: dict[str, str], run_date: str, **overrides: str) -> subprocess.CompletedProcess:
    """Run the DAG file's own ``dag.test()`` entry point for one logical date."""
    return subprocess.run(
        [sys.executable, str(DAG_FILE), run_date],
        env={**env, **overrides},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def latest_task_states(env: dict[str, str]) -> dict[str, str]:
    """Task states of the DAG's most recent run, read from Airflow's metadata database."""
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            """
            select task_id, state from task_instance
            where run_id = (select run_id from dag_run where dag_id = ? order by id desc limit 1)
            """,
            (airflow_local.DAG_ID,),
        ).fetchall()
    return dict(rows)


def vault_snapshot(settings: Settings) -> dict[str, object]:
    """Row counts of every vault table and the order amount total, read with plain SQL."""
    conn = psycopg2.connect(settings.dsn)
    try:
        with conn.cursor() as cur:
            snapshot: dict[str, object] = {}
            for table in VAULT_TABLES:
                cur.execute(f"select count(*) from raw_vault.{table}")
                snapshot[table] = cur.fetchone()[0]
            cur.execute("select sum(total_amount) from raw_vault.sat_order_details")
            snapshot["order_total"] = cur.fetchone()[0]
            cur.execute(
                "select count(*) from raw_vault.link_customer_order l"
                " join raw_vault.hub_customer h using (customer_hk) where h.customer_id = %s",
                (GHOST_ID,),
            )
            snapshot["ghost_customer_orders"] = cur.fetchone()[0]
    finally:
        conn.close()
    return snapshot


def latest_batch(settings: Settings) -> dict[str, object]:
    conn = psycopg2.connect(settings.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                select batch_id, status, data_dir, message, finished_at, report
                from audit.load_batch order by batch_id desc limit 1
                """
            )
            columns = [column.name for column in cur.description]
            return dict(zip(columns, cur.fetchone(), strict=True))
    finally:
        conn.close()


def test_dag_run_loads_what_the_files_hold(first_run, airflow_env, dag_settings, demo_data_dir):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]
    assert latest_task_states(airflow_env) == dict.fromkeys(ALL_TASKS, "success")

    expected = expected_warehouse(demo_data_dir)
    orders = expected.orders.values()
    assert vault_snapshot(dag_settings) == {
        "hub_customer": len(expected.customers) + 1,  # plus the ghost record
        "hub_product": len(expected.products) + 1,
        "hub_order": len(expected.orders),
        "link_customer_order": len(expected.orders),
        "link_order_product": len(expected.orders),
        "sat_customer_details": len(expected.customers),
        "sat_product_details": len(expected.products),
        "sat_order_details": len(expected.orders),
        "sat_customer_order_effectivity": 0,  # no order moved and came back
        "sat_order_product_effectivity": 0,
        "order_total": sum(order["total"] for order in orders),
        "ghost_customer_orders": sum(1 for o in orders if o["customer_key"] == GHOST_ID),
    }

    batch = latest_batch(dag_settings)
    assert batch["status"] == "succeeded"
    # No landing folder exists for RUN_DATE, so the run read the demo data.
    assert Path(batch["data_dir"]) == demo_data_dir.resolve()
    file_rows = sum(1 for _ in (demo_data_dir / "transactions.csv").open(encoding="utf-8")) - 1
    assert batch["report"]["row_counts"]["landed"]["transactions"]["data_rows"] == file_rows


def test_rerunning_a_date_changes_nothing(first_run, airflow_env, dag_settings):
    before = vault_snapshot(dag_settings)
    first_batch = latest_batch(dag_settings)["batch_id"]

    rerun = run_dag(airflow_env, RUN_DATE)

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert latest_task_states(airflow_env) == dict.fromkeys(ALL_TASKS, "success")
    assert vault_snapshot(dag_settings) == before
    batch = latest_batch(dag_settings)
    assert batch["batch_id"] > first_batch
    assert batch["status"] == "succeeded"


def test_a_run_reads_the_landing_folder_of_its_logical_date(
    first_run, airflow_env, dag_settings, demo_data_dir, landing_root
):
    landing_date = "2026-01-16"
    folder = landing_root / landing_date
    folder.mkdir()
    for name in ("customers.csv", "products.csv", "transactions.csv"):
        shutil.copy(demo_data_dir / name, folder / name)
    before = vault_snapshot(dag_settings)

    try:
        landed = run_dag(airflow_env, landing_date, C360_LANDING_DIR=str(landing_root))
    finally:
        shutil.rmtree(folder)

    assert landed.returncode == 0, landed.stdout[-3000:] + landed.stderr[-3000:]
    batch = latest_batch(dag_settings)
    assert batch["status"] == "succeeded"
    assert Path(batch["data_dir"]) == folder.resolve()
    # The same files again: nothing new reaches the vault.
    assert vault_snapshot(dag_settings) == before


def test_breached_threshold_fails_the_quality_check_and_spares_the_vault(
    first_run, airflow_env, dag_settings, demo_data_dir
):
    before = vault_snapshot(dag_settings)
    # More customers than the file has rows: no load of these files can meet it.
    file_rows = sum(1 for _ in (demo_data_dir / "customers.csv").open(encoding="utf-8"))

    failed = run_dag(airflow_env, RUN_DATE, C360_MIN_CUSTOMERS=str(file_rows + 1))

    assert failed.returncode != 0
    states = latest_task_states(airflow_env)
    assert {task: states[task] for task in ["start_batch", *STAGING_TASKS]} == dict.fromkeys(
        ["start_batch", *STAGING_TASKS], "success"
    )
    assert states["quality_check_staging"] == "failed"
    assert latest_try_number(airflow_env, "quality_check_staging") == 1  # no retries
    assert {task: states[task] for task in VAULT_TASKS} == dict.fromkeys(
        VAULT_TASKS, "upstream_failed"
    )
    assert vault_snapshot(dag_settings) == before
    batch = latest_batch(dag_settings)
    assert batch["status"] == "failed"
    assert batch["finished_at"] is not None
    assert "threshold" in batch["message"]
    assert f"at least {file_rows + 1:,} required" in batch["message"]


def test_a_file_that_needs_fixing_fails_at_once_without_retries(
    first_run, airflow_env, dag_settings, demo_data_dir, landing_root
):
    broken_date = "2026-01-17"
    folder = landing_root / broken_date
    folder.mkdir()
    for name in ("customers.csv", "products.csv"):
        shutil.copy(demo_data_dir / name, folder / name)
    # A transactions file whose header lacks the required quantity column.
    with (demo_data_dir / "transactions.csv").open(encoding="utf-8") as source:
        header = source.readline().rstrip("\n").split(",")
    (folder / "transactions.csv").write_text(
        ",".join(column for column in header if column != "quantity") + "\n"
    )
    before = vault_snapshot(dag_settings)
    batches_before = latest_batch(dag_settings)["batch_id"]

    try:
        failed = run_dag(airflow_env, broken_date, C360_LANDING_DIR=str(landing_root))
    finally:
        shutil.rmtree(folder)

    assert failed.returncode != 0
    assert "missing the required column 'quantity'" in failed.stdout + failed.stderr
    states = latest_task_states(airflow_env)
    assert states["start_batch"] == "failed"
    assert {task: state for task, state in states.items() if task != "start_batch"} == (
        dict.fromkeys(ALL_TASKS[1:], "upstream_failed")
    )
    assert latest_try_number(airflow_env, "start_batch") == 1
    assert vault_snapshot(dag_settings) == before
    # The files were refused before a batch was opened.
    assert latest_batch(dag_settings)["batch_id"] == batches_before


def test_a_delivery_that_has_not_arrived_is_waited_for_not_replaced(
    first_run, airflow_env, dag_settings, landing_root, tmp_path
):
    before = vault_snapshot(dag_settings)
    batches_before = latest_batch(dag_settings)["batch_id"]
    log_path = tmp_path / "run.log"

    # The run would retry ten minutes later: it is stopped once its first try has failed.
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(DAG_FILE), "2026-01-19"],
            env={**airflow_env, "C360_LANDING_DIR": str(landing_root)},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 600
            while latest_task_states(airflow_env).get("start_batch") != "up_for_retry":
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(1)
        finally:
            process.kill()
            process.wait()

    missing = landing_root / "2026-01-19"
    assert f"no delivery for 2026-01-19: {missing} does not exist" in log_path.read_text()
    assert vault_snapshot(dag_settings) == before
    assert latest_batch(dag_settings)["batch_id"] == batches_before


def latest_try_number(env: dict[str, str], task_id: str) -> int:
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        (try_number,) = conn.execute(
            """
            select try_number from task_instance
            where task_id = ?
              and run_id = (select run_id from dag_run where dag_id = ? order by id desc limit 1)
            """,
            (task_id, airflow_local.DAG_ID),
        ).fetchone()
    return try_number


def test_files_a_later_batch_superseded_are_skipped_not_loaded_again(
    first_run, airflow_env, dag_settings, demo_data_dir, tmp_path
):
    """Runs last: it makes a later delivery the newest batch."""
    next_day = tmp_path / "next_day"
    generate_next_day(demo_data_dir, next_day)
    run_batch(next_day, dag_settings)
    before = vault_snapshot(dag_settings)

    # No landing folder for this date: the run reads the demo data, which the first run loaded.
    skipped = run_dag(airflow_env, "2026-01-18")

    assert skipped.returncode == 0, skipped.stdout[-3000:] + skipped.stderr[-3000:]
    assert latest_task_states(airflow_env) == dict.fromkeys(ALL_TASKS, "skipped")
    assert vault_snapshot(dag_settings) == before
    assert latest_batch(dag_settings)["data_dir"] == str(next_day.resolve())
