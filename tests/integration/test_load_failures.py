"""A load whose database goes away: the CLI says so in one line, the batch is closed as failed,
and the next load is not kept waiting by a batch nothing is loading any more."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from customer360.db import reused_connections, transaction
from customer360.errors import BatchInProgressError
from customer360.generator import generate_dataset
from customer360.pipeline import open_batch_of_airflow_run, run_batch, start_batch
from tests.integration.test_cli import assert_one_line_error

THRESHOLDS = {"min_customers": 100, "min_products": 10, "min_transactions": 100}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("small")
    generate_dataset(data_dir, customers=1500, products=300, transactions=4000, seed=11)
    return data_dir


@pytest.fixture
def settings(make_database):
    return make_database().model_copy(update=THRESHOLDS)


def autocommit_connection(settings) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(settings.dsn)
    conn.autocommit = True
    return conn


def batch_statuses(settings) -> list[tuple[str, str | None]]:
    conn = autocommit_connection(settings)
    with conn.cursor() as cur:
        cur.execute("select status, message from audit.load_batch order by batch_id")
        rows = cur.fetchall()
    conn.close()
    return rows


@dataclass
class HeldLoad:
    """A `c360 load` the test holds inside its batch, and the test's session watching it."""

    process: subprocess.Popen
    watcher: psycopg2.extensions.connection
    holder_pid: int

    def end_load_sessions(self) -> int:
        """End every session of the load (all but the test's own); returns how many."""
        with self.watcher.cursor() as cur:
            cur.execute(
                """
                select count(pg_terminate_backend(pid)) from pg_stat_activity
                where datname = current_database() and pid not in (pg_backend_pid(), %s)
                """,
                (self.holder_pid,),
            )
            return cur.fetchone()[0]

    def error_output(self) -> subprocess.CompletedProcess:
        """How the load ended, once it has."""
        _, stderr = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, "", stderr)


@contextmanager
def load_held_mid_batch(settings, data_dir: Path) -> Iterator[HeldLoad]:
    """``c360 load`` started and held inside its batch: the test locks a hub the quality checks
    read, and yields once a load session waits for that lock."""
    holder = psycopg2.connect(settings.dsn)
    with holder.cursor() as cur:
        cur.execute("lock table raw_vault.hub_customer in access exclusive mode")
        cur.execute("select pg_backend_pid()")
        holder_pid = cur.fetchone()[0]
    env = {
        **os.environ,
        "C360_DATABASE_URL": settings.dsn,
        "C360_MIN_CUSTOMERS": str(settings.min_customers),
        "C360_MIN_PRODUCTS": str(settings.min_products),
        "C360_MIN_TRANSACTIONS": str(settings.min_transactions),
    }
    load = subprocess.Popen(
        [sys.executable, "-m", "customer360.cli", "load", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watcher = autocommit_connection(settings)
    try:
        with watcher.cursor() as cur:
            deadline = time.monotonic() + 120
            while True:
                cur.execute(
                    """
                    select exists (select from audit.load_batch where status = 'running')
                       and exists (select from pg_stat_activity
                                   where datname = current_database() and wait_event_type = 'Lock')
                    """
                )
                if cur.fetchone()[0]:
                    break
                assert load.poll() is None, load.communicate()
                assert time.monotonic() < deadline, "the load never reached the locked hub"
                time.sleep(0.05)
        yield HeldLoad(load, watcher, holder_pid)
    finally:
        if load.poll() is None:
            load.kill()
        load.communicate()
        watcher.close()
        holder.close()


def set_connections_allowed(settings, allowed: bool) -> None:
    admin = psycopg2.connect(settings.dsn.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    database = settings.dsn.rsplit("/", 1)[1]
    with admin.cursor() as cur:
        cur.execute(f'alter database "{database}" with allow_connections {allowed}')
    admin.close()


def test_a_load_whose_sessions_are_ended_fails_its_batch_in_one_line(settings, small_data):
    with load_held_mid_batch(settings, small_data) as load:
        assert load.end_load_sessions() > 0
        ended = load.error_output()

    assert_one_line_error(ended, "lost the connection to PostgreSQL")
    [(status, message)] = batch_statuses(settings)
    assert status == "failed"
    assert "OperationalError" in message
    run_batch(small_data, settings)
    assert [status for status, _ in batch_statuses(settings)] == ["failed", "succeeded"]


def test_a_batch_whose_loader_lost_the_database_does_not_block_the_next_load(settings, small_data):
    """The database refuses new connections too, so the failed load cannot record its failure;
    the next load finds that session gone and closes the batch as abandoned."""
    try:
        with load_held_mid_batch(settings, small_data) as load:
            set_connections_allowed(settings, False)
            assert load.end_load_sessions() > 0
            ended = load.error_output()
    finally:
        set_connections_allowed(settings, True)

    assert_one_line_error(ended, "lost the connection to PostgreSQL")
    assert [status for status, _ in batch_statuses(settings)] == ["running"]
    run_batch(small_data, settings)
    [(first_status, first_message), (second_status, _)] = batch_statuses(settings)
    assert (first_status, second_status) == ("failed", "succeeded")
    assert first_message.startswith("abandoned")


def test_a_batch_whose_loader_is_alive_still_blocks_another_start(settings, small_data):
    with (
        load_held_mid_batch(settings, small_data),
        pytest.raises(BatchInProgressError, match="batch 1 has been loading"),
    ):
        start_batch(small_data, settings)


def test_a_retried_start_task_closes_the_batch_its_earlier_try_opened(settings, small_data):
    # The DAG's start task opened a batch and failed before handing its id on; Airflow retries it.
    first = start_batch(small_data, settings, airflow_run_id="scheduled__2026-01-15")
    second = start_batch(small_data, settings, airflow_run_id="scheduled__2026-01-15")

    assert batch_statuses(settings) == [
        ("failed", "abandoned: its Airflow run opened a new batch"),
        ("running", None),
    ]
    assert open_batch_of_airflow_run("scheduled__2026-01-15", settings) == second != first
    # Another run's batch is still one that is loading.
    with pytest.raises(BatchInProgressError, match=f"batch {second} has been loading"):
        start_batch(small_data, settings, airflow_run_id="scheduled__2026-01-16")


def test_a_pooled_connection_that_failed_is_not_lent_again(database):
    with reused_connections(database):
        with transaction(database) as cur:
            cur.execute("select pg_backend_pid()")
            first = cur.fetchone()[0]
        ended = autocommit_connection(database)
        with ended.cursor() as cur:
            cur.execute("select pg_terminate_backend(%s)", (first,))
        ended.close()
        with pytest.raises(psycopg2.OperationalError), transaction(database) as cur:
            cur.execute("select 1")
        with transaction(database) as cur:
            cur.execute("select pg_backend_pid()")
            assert cur.fetchone()[0] != first


def test_a_finished_load_holds_no_lock_once_it_has_returned(settings, small_data):
    # A closed session keeps its locks until its server process exits, moments later: the
    # load releases them first, so a batch started at once (the next day's) is not refused.
    watcher = autocommit_connection(settings)
    try:
        for _ in range(3):
            run_batch(small_data, settings, reload=True)
            with watcher.cursor() as cur:
                cur.execute(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                    " and database = (select oid from pg_database"
                    "                 where datname = current_database())"
                )
                assert cur.fetchone()[0] == 0
    finally:
        watcher.close()
