"""What the Airflow DAG needs besides the warehouse steps themselves.

The settings its tasks run with (the database comes from the Airflow connection
``customer360_postgres``), the landing directory of a logical date, and the alerts: a task that
fails for good and a run that misses its deadline are logged and, when ``C360_SMTP_HOST`` is set,
e-mailed to ``C360_ALERT_EMAIL``.

The DAG file imports this module at parse time, so it stays light: Airflow, psycopg2 and the
warehouse loader are imported inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import urllib.parse
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from customer360.errors import DeliveryMissingError
from customer360.settings import Settings, get_settings

CONNECTION_ID = "customer360_postgres"
START_TASK_ID = "start_batch"

log = logging.getLogger(__name__)


def settings_for_tasks() -> Settings:
    """The platform settings, with the database taken from the ``customer360_postgres`` connection.

    Without that connection (a plain ``python dags/customer_data_pipeline.py``) the tasks use the
    database the ``C360_*`` settings point at, as the CLI does.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    settings = get_settings()
    try:
        connection = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        log.warning("no Airflow connection %r; using the C360_* settings", CONNECTION_ID)
        return settings
    return settings.model_copy(update={"database_url": dsn_from_connection(connection)})


def dsn_from_connection(connection: Any) -> str:
    """A libpq URL from an Airflow connection's host, port, login, password, schema and extras."""
    credentials = urllib.parse.quote(connection.login or "", safe="")
    if connection.password:
        credentials += ":" + urllib.parse.quote(connection.password, safe="")
    netloc = f"{credentials}@" if credentials else ""
    netloc += connection.host or "127.0.0.1"
    if connection.port:
        netloc += f":{connection.port}"
    query = urllib.parse.urlencode(
        {key: value for key, value in (connection.extra_dejson or {}).items() if key != "cursor"}
    )
    database = urllib.parse.quote(connection.schema or "", safe="")
    return urllib.parse.urlunsplit(("postgresql", netloc, f"/{database}", query, ""))


def landing_directory(logical_date: date, settings: Settings | None = None) -> Path:
    """Where a run for ``logical_date`` reads its files.

    ``<landing_dir>/<YYYY-MM-DD>/`` when a landing directory is configured; otherwise
    ``data_dir`` (the demo data), so a fresh installation runs the DAG without any landing
    set-up. A configured landing directory without that day's folder raises
    ``DeliveryMissingError``: any other files loaded in its place would pass for that day's.
    """
    settings = settings or get_settings()
    if settings.landing_dir is None:
        return Path(settings.data_dir)
    dated = Path(settings.landing_dir) / logical_date.isoformat()
    if not dated.is_dir():
        raise DeliveryMissingError(
            f"no delivery for {logical_date.isoformat()}: {dated} does not exist (yet)"
        )
    return dated


def notify_task_failure(context: dict[str, Any]) -> None:
    """Failure callback of every task: log, mark the batch failed, e-mail when SMTP is set.

    It runs once a task has failed for good (retries used up, or an error no retry can fix), so
    a transient error that a retry fixes neither alerts nor fails the batch.
    """
    task_instance = context["ti"]
    exception = context.get("exception")
    where = f"{task_instance.dag_id}.{task_instance.task_id} (run {task_instance.run_id})"
    message = f"task {where} failed: {exception}"
    log.error(message)

    from customer360 import pipeline

    # A breached threshold and a failed reconciliation are recorded by the pipeline itself.
    recorded_by_pipeline = (pipeline.ThresholdBreachedError, pipeline.ReconciliationError)
    if not isinstance(exception, recorded_by_pipeline):
        try:
            settings = settings_for_tasks()
            batch_id = task_instance.xcom_pull(task_ids=START_TASK_ID)
            if batch_id is None:
                # The start task may have opened the batch and failed before handing its id on.
                batch_id = pipeline.open_batch_of_airflow_run(task_instance.run_id, settings)
            if batch_id is not None:
                pipeline.fail_batch(int(batch_id), message, settings=settings)
        except Exception:
            # The alert below matters more than the bookkeeping; the cause is in the task log.
            log.exception("could not record the failure of run %s's batch", task_instance.run_id)
    send_alert(f"[customer360] {where} failed", message)


async def notify_deadline_missed(context: dict[str, Any], **kwargs: Any) -> None:
    """Deadline-alert callback (run by the triggerer): the run has not finished in time."""
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    message = (
        f"DAG run {dag_run.get('dag_id')}/{dag_run.get('dag_run_id')} has not finished by its"
        f" deadline {deadline.get('deadline_time')} (state {dag_run.get('state')})"
    )
    log.warning(message)
    await asyncio.to_thread(
        send_alert, f"[customer360] {dag_run.get('dag_id')} missed its deadline", message
    )


def send_alert(subject: str, body: str, settings: Settings | None = None) -> bool:
    """E-mail an alert when ``C360_SMTP_HOST`` (``host`` or ``host:port``) is configured.

    Returns whether a message was sent; a failing mail server is logged, never raised, so an
    alert cannot hide the failure it reports.
    """
    settings = settings or get_settings()
    if not settings.smtp_host:
        return False
    if not settings.alert_email:
        log.warning("C360_SMTP_HOST is set but C360_ALERT_EMAIL is not; alert not e-mailed")
        return False
    host, _, port = settings.smtp_host.partition(":")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.alert_email
    message["To"] = settings.alert_email
    message.set_content(body)
    try:
        with smtplib.SMTP(host, int(port or 25), timeout=30) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException):
        log.exception("could not e-mail the alert through %s", settings.smtp_host)
        return False
    return True
