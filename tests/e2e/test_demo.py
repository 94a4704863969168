"""The README's main command, `c360 demo`, from an empty work folder to a running platform,
run twice (the second run adds nothing), then `c360 stop`. Airflow has tests of its own
(test_airflow_standalone.py) and is left out here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg2

from customer360.commands.demo import DEMO_EVENTS
from customer360.processes import free_port, port_in_use
from customer360.settings import PROJECT_ROOT
from tests.expected import expected_after_next_day, expected_warehouse

DEMO_KEY = {"X-API-Key": "c360-demo-key"}
WAIT_SECONDS = 180


def c360(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "customer360.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_main_command_runs_the_platform_and_stop_ends_it(tmp_path: Path) -> None:
    ports = {"database": free_port(), "api": free_port(), "kafka": free_port(count=2)}
    data_dir = tmp_path / "data"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("C360_") and name != "KAFKA_BOOTSTRAP_SERVERS"
    } | {
        "C360_WORK_DIR": str(tmp_path / "work"),
        "C360_DATA_DIR": str(data_dir),
        "C360_EMBEDDED_PG_PORT": str(ports["database"]),
        "C360_API_PORT": str(ports["api"]),
        "C360_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
    }
    dsn = f"postgresql://postgres@127.0.0.1:{ports['database']}/customer360"
    try:
        first = c360("demo", "--no-airflow", env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        # Day 1 and the next day, each reconciled.
        assert first.stdout.count("reconciliation: 13/13 checks passed") == 2, first.stdout

        expected = expected_after_next_day(expected_warehouse(data_dir), data_dir / "next_day")
        api = f"http://127.0.0.1:{ports['api']}"
        page = httpx.get(f"{api}/customers", params={"limit": 1}, headers=DEMO_KEY, timeout=30)
        assert page.status_code == 200, page.text
        assert page.json()["total"] == len(expected.customers)

        # The consumer aggregates every event the demo produced.
        def events_counted() -> int:
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute("select coalesce(sum(event_count), 0) from public.real_time_metrics")
                counted = cur.fetchone()[0]
            conn.close()
            return counted

        deadline = time.monotonic() + WAIT_SECONDS
        while events_counted() < DEMO_EVENTS and time.monotonic() < deadline:
            time.sleep(1)
        assert events_counted() == DEMO_EVENTS

        def vault_rows() -> int:
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute(
                    "select (select count(*) from raw_vault.hub_order)"
                    " + (select count(*) from raw_vault.sat_order_details)"
                    " + (select count(*) from raw_vault.sat_customer_details)"
                )
                rows = cur.fetchone()[0]
            conn.close()
            return rows

        before = vault_rows()
        again = c360("demo", "--no-airflow", env=env)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "loaded by an earlier run, before the next day; not loaded again" in again.stdout
        assert vault_rows() == before
    finally:
        stopped = c360("stop", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, port in ports.items():
        assert not port_in_use("127.0.0.1", port), name
