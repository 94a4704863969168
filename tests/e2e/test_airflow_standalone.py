"""A real ``airflow standalone`` started by ``customer360.airflow_local`` (as ``c360 airflow
start`` does): the DAG triggered through Airflow's REST API v2 loads the warehouse, and its page
in headless Chromium shows the DAG and every task."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from customer360 import airflow_local
from customer360.processes import free_port
from customer360.settings import Settings
from tests.expected import expected_warehouse

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1800)]

DAG_ID = "customer_data_pipeline"
TASK_IDS = [
    "start_batch",
    "load_staging_customers",
    "load_staging_products",
    "load_staging_transactions",
    "quality_check_staging",
    "load_hubs",
    "load_links",
    "load_satellites",
    "reconcile_vault",
    "refresh_business_views",
    "run_report",
]
RUN_TIMEOUT_SECONDS = 900
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def airflow_instance(make_database, demo_data_dir: Path, tmp_path_factory) -> Iterator[Settings]:
    """Airflow standalone on a free port, loading into a fresh warehouse database; stopped after."""
    settings = make_database().model_copy(
        update={
            "work_dir": tmp_path_factory.mktemp("airflow-standalone"),
            "data_dir": demo_data_dir,
            "airflow_port": free_port(),
        }
    )
    try:
        airflow_local.start(settings, timeout=600)
        yield settings
    finally:
        airflow_local.stop(settings)


@pytest.fixture(scope="module")
def api(airflow_instance: Settings) -> Iterator[httpx.Client]:
    """An HTTP client of the REST API holding a token from ``POST /auth/token``."""
    base = airflow_local.base_url(airflow_instance)
    with httpx.Client(base_url=base, timeout=30) as client:
        response = client.post("/auth/token", json={"username": "admin", "password": "admin"})
        assert response.status_code == 201, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


@pytest.fixture(scope="module")
def finished_run(api: httpx.Client) -> dict:
    """Unpause the DAG, trigger it, and wait until every run of it has finished."""
    unpaused = api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert unpaused.status_code == 200, unpaused.text
    triggered = api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]

    # Unpausing also schedules the latest daily interval; one run at a time, both load the demo
    # data, and the warehouse is checked once neither is still going.
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        if all(run["state"] in ("success", "failed") for run in runs):
            break
        assert time.monotonic() < deadline, f"runs still going: {runs}"
        time.sleep(3)
    return next(run for run in runs if run["dag_run_id"] == run_id)


def test_triggered_run_succeeds_and_loads_the_warehouse(
    api, finished_run, airflow_instance, demo_data_dir
):
    assert finished_run["state"] == "success"
    tasks = api.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{finished_run['dag_run_id']}/taskInstances"
    ).json()["task_instances"]
    assert {task["task_id"]: task["state"] for task in tasks} == dict.fromkeys(TASK_IDS, "success")

    expected = expected_warehouse(demo_data_dir)
    conn = psycopg2.connect(airflow_instance.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from raw_vault.hub_customer where customer_id <> '-1'")
            customers = cur.fetchone()[0]
            cur.execute("select count(*), sum(total_amount) from raw_vault.sat_order_details")
            orders, order_total = cur.fetchone()
            cur.execute("select count(*) from business_vault.vw_customer_360")
            profiles = cur.fetchone()[0]
            cur.execute("select status from audit.load_batch order by batch_id")
            statuses = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    assert customers == len(expected.customers)
    assert orders == len(expected.orders)
    assert order_total == sum(order["total"] for order in expected.orders.values())
    assert profiles == len(expected.customers)
    assert statuses and set(statuses) == {"succeeded"}


def test_cli_reports_a_healthy_airflow(airflow_instance):
    env = {
        **os.environ,
        "C360_WORK_DIR": str(airflow_instance.work_dir),
        "C360_AIRFLOW_PORT": str(airflow_instance.airflow_port),
        "C360_DATABASE_URL": airflow_instance.dsn,
    }
    result = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "airflow", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert airflow_local.base_url(airflow_instance) in result.stdout
    for component in ("scheduler", "triggerer", "dag_processor", "metadatabase"):
        assert f"{component} healthy" in result.stdout


@pytest.mark.browser
def test_dag_page_shows_the_dag_and_its_tasks(airflow_instance, finished_run, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    url = f"{airflow_local.base_url(airflow_instance)}/dags/{DAG_ID}"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            # SimpleAuthManager's sign-in form, then back to the DAG's page.
            page.get_by_label("Username").fill(airflow_local.ADMIN_USERNAME)
            page.get_by_label("Password").fill(airflow_local.ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}**", timeout=60_000)
            page.get_by_text("run_report", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(artifacts_dir / "airflow_dag_page.png"), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert DAG_ID in text
    missing = [task_id for task_id in TASK_IDS if task_id not in text]
    assert missing == []
