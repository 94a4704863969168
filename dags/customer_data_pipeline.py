"""
### Customer 360 daily load

Loads one day's CSV files (customers, products, transactions) through staging and the quality
checks into the Data Vault, reconciles it and refreshes the business views the API serves.

* **Input**: `<C360_LANDING_DIR>/<logical date, YYYY-MM-DD>/` when `C360_LANDING_DIR` is
  set, otherwise `C360_DATA_DIR` (the demo data). A day whose folder has not arrived is
  waited for (three retries, ten minutes apart), then fails and alerts.
* **Database**: the Airflow connection `customer360_postgres`.
* **Flow**: one batch per run; the three staging loads run in parallel, a breached row-count
  threshold fails `quality_check_staging` and leaves the vault untouched; links and satellites
  load in parallel once the hubs hold every key; `run_report` writes the counts, quarantined rows
  and timings to its log and to `audit.load_batch`.
* **Re-running a date** adds nothing the vault already holds: every step is idempotent. Files
  an earlier batch loaded, after a later batch has loaded others (say the demo data once the
  next day is in), are not loaded again: `start_batch` is skipped, and so is the rest of the run.
* **Retries**: three, 30 s apart and doubling, for transient errors (a database restart, a
  timeout); a batch already loading (a `c360 load` from the command line) is waited for, up
  to three times five minutes; a problem someone has to fix (a missing file, a wrong header,
  a breached threshold) fails the task at once. After a failure, clear the whole run, not one
  task: its batch has been closed as failed, and `start_batch` opens a new one.
* **Alerts**: a task failing after its retries, or a run still going 15 minutes after it was
  queued, is logged and e-mailed when `C360_SMTP_HOST` is set.

Each task is a thin call into `customer360.pipeline`, the same code `c360 load` runs.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import (
    AsyncCallback,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    ExceptionRetryPolicy,
    RetryAction,
    RetryRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from customer360 import orchestration
from customer360.errors import BatchInProgressError, DeliveryMissingError, UserFacingError

SOURCES = ("customers", "products", "transactions")

default_args = {
    "owner": "customer360-data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    # A failure the user has to fix (a missing file, a wrong header, a breached threshold, a
    # failed reconciliation) fails at once; anything else (a database restart, a timeout) retries.
    "retry_policy": ExceptionRetryPolicy(
        # The first rule that matches decides.
        rules=[
            RetryRule(
                exception=BatchInProgressError,
                action=RetryAction.RETRY,
                retry_delay=timedelta(minutes=5),
                reason="another batch is loading",
            ),
            RetryRule(
                exception=DeliveryMissingError,
                action=RetryAction.RETRY,
                retry_delay=timedelta(minutes=10),
                reason="the day's files have not arrived",
            ),
            RetryRule(exception=UserFacingError, action=RetryAction.FAIL),
        ]
    ),
    "execution_timeout": timedelta(minutes=10),
    "on_failure_callback": orchestration.notify_task_failure,
}


@dag(
    dag_id="customer_data_pipeline",
    description="CSV files to staging, Data Vault 2.0 and the Customer 360 business views",
    # Each run loads the day its logical date names, once that day is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # Batches of one warehouse load one after another.
    max_active_runs=1,
    # Scheduled as soon as Airflow first sees it: the nightly load is the point of the DAG.
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(hours=1),
    default_args=default_args,
    tags=["customer360", "data-vault", "warehouse", "daily"],
    doc_md=__doc__,
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=15),
        callback=AsyncCallback(orchestration.notify_deadline_missed),
    ),
)
def customer_data_pipeline():
    @task(execution_timeout=timedelta(minutes=2))
    def start_batch() -> int:
        """Open the batch for this run's landing directory; its id flows on through XCom."""
        from customer360 import pipeline

        context = get_current_context()
        run_date = context.get("logical_date") or context["dag_run"].run_after
        settings = orchestration.settings_for_tasks()
        data_dir = orchestration.landing_directory(run_date.date(), settings)
        print(f"batch for {run_date.date().isoformat()} reads {data_dir}")
        try:
            return pipeline.start_batch(
                data_dir, settings=settings, airflow_run_id=context["run_id"]
            )
        except pipeline.SupersededFilesError as exc:
            # Nothing new to load, and loading it would undo later batches: not a failure.
            raise AirflowSkipException(str(exc)) from exc

    @task
    def load_staging(batch_id: int, source: str) -> dict:
        """COPY one source file into staging; returns its row counts."""
        from customer360 import pipeline

        return pipeline.load_staging(batch_id, source, settings=orchestration.settings_for_tasks())

    @task
    def quality_check_staging(batch_id: int) -> dict:
        """Quarantine bad rows; a breached row-count threshold fails the batch and the run."""
        from customer360 import pipeline

        return pipeline.check_staging(batch_id, settings=orchestration.settings_for_tasks())

    @task
    def load_hubs(batch_id: int) -> None:
        """Add the new business keys of the batch to the hubs."""
        from customer360 import pipeline

        pipeline.load_hubs(batch_id, settings=orchestration.settings_for_tasks())

    @task
    def load_links(batch_id: int) -> None:
        """Add the new customer-order and order-product links."""
        from customer360 import pipeline

        pipeline.load_links(batch_id, settings=orchestration.settings_for_tasks())

    @task
    def load_satellites(batch_id: int) -> None:
        """Add a satellite row for every new or changed descriptive payload."""
        from customer360 import pipeline

        pipeline.load_satellites(batch_id, settings=orchestration.settings_for_tasks())

    @task
    def reconcile_vault(batch_id: int) -> list[dict]:
        """Compare staged rows and amounts with what reached the vault."""
        from customer360 import pipeline

        return pipeline.reconcile(batch_id, settings=orchestration.settings_for_tasks())

    @task
    def refresh_business_views(batch_id: int) -> None:
        """Refresh the point-in-time table and the business views."""
        from customer360 import pipeline

        pipeline.refresh_business_views(batch_id, settings=orchestration.settings_for_tasks())

    @task(execution_timeout=timedelta(minutes=2))
    def run_report(batch_id: int) -> dict:
        """Close the batch and log its report: counts, quarantined rows and timings."""
        from customer360 import pipeline
        from customer360.commands.warehouse import print_report

        report = pipeline.finish_batch(batch_id, settings=orchestration.settings_for_tasks())
        # The same report `c360 report` prints; the full document is the task's XCom.
        print_report(report)
        return report

    batch_id = start_batch()
    staged = [
        load_staging.override(task_id=f"load_staging_{source}")(batch_id, source)
        for source in SOURCES
    ]
    checked = quality_check_staging(batch_id)
    hubs = load_hubs(batch_id)
    links = load_links(batch_id)
    satellites = load_satellites(batch_id)
    reconciled = reconcile_vault(batch_id)
    refreshed = refresh_business_views(batch_id)
    report = run_report(batch_id)

    staged >> checked >> hubs >> [links, satellites] >> reconciled >> refreshed >> report


pipeline_dag = customer_data_pipeline()

if __name__ == "__main__":
    import sys

    # `python dags/customer_data_pipeline.py [YYYY-MM-DD]` runs the DAG in-process for that date.
    # Airflow 3.3's dag.test() cannot finish a run of a DAG with a deadline alert (it looks the
    # alert up by an id only the scheduler assigns), and a test run has no deadline to meet.
    pipeline_dag.deadline = None
    if len(sys.argv) > 1:
        dag_run = pipeline_dag.test(logical_date=pendulum.parse(sys.argv[1], tz="UTC"))
    else:
        dag_run = pipeline_dag.test()
    sys.exit(0 if dag_run.state == "success" else 1)
