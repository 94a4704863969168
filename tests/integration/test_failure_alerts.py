"""What happens when a DAG task fails for good: its batch is marked failed in the database,
and an alert is e-mailed when SMTP is configured. The callback runs here without Airflow: a
task instance with what the callback reads, and a real database and SMTP server."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes

import pytest

from customer360 import orchestration
from customer360.pipeline import ThresholdBreachedError, start_batch
from tests.database_state import query

RUN_ID = "scheduled__2026-01-02T00:00:00+00:00"


@dataclass
class FailedTaskInstance:
    """What notify_task_failure reads of Airflow's task instance."""

    handed_on_batch_id: int | None
    dag_id: str = "customer_data_pipeline"
    task_id: str = "load_hubs"
    run_id: str = RUN_ID

    def xcom_pull(self, task_ids: str) -> int | None:
        assert task_ids == orchestration.START_TASK_ID
        return self.handed_on_batch_id


@pytest.mark.parametrize("handed_on", [True, False], ids=["id handed on", "found by run"])
def test_a_task_that_failed_for_good_fails_its_batch(
    make_database, demo_data_dir, monkeypatch, handed_on
):
    settings = make_database()
    # The database Airflow's connection would name.
    monkeypatch.setattr(orchestration, "settings_for_tasks", lambda: settings)
    batch_id = start_batch(demo_data_dir, settings, airflow_run_id=RUN_ID)
    task = FailedTaskInstance(batch_id if handed_on else None)

    orchestration.notify_task_failure({"ti": task, "exception": OSError("disk full")})

    [(status, message, finished)] = query(
        settings,
        "select status, message, finished_at is not null from audit.load_batch where batch_id = %s",
        (batch_id,),
    )
    assert (status, finished) == ("failed", True)
    assert message == f"task customer_data_pipeline.load_hubs (run {RUN_ID}) failed: disk full"


def test_a_failure_the_pipeline_recorded_itself_is_left_as_it_recorded_it(
    make_database, demo_data_dir, monkeypatch
):
    settings = make_database()
    monkeypatch.setattr(orchestration, "settings_for_tasks", lambda: settings)
    batch_id = start_batch(demo_data_dir, settings, airflow_run_id=RUN_ID)

    orchestration.notify_task_failure(
        {"ti": FailedTaskInstance(batch_id), "exception": ThresholdBreachedError("too few rows")}
    )

    assert query(
        settings, "select status from audit.load_batch where batch_id = %s", (batch_id,)
    ) == [("running",)]


class _Mailbox(socketserver.StreamRequestHandler):
    """Just enough SMTP to take a message (EHLO, MAIL, RCPT, DATA, QUIT)."""

    def handle(self) -> None:
        self.wfile.write(b"220 localhost\r\n")
        lines: list[bytes] | None = None
        for line in self.rfile:
            if lines is not None:
                if line == b".\r\n":
                    self.server.messages.append(b"".join(lines))
                    lines = None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line)
                continue
            verb = line[:4].upper()
            if verb == b"DATA":
                lines = []
                self.wfile.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def mail_server() -> Iterator[socketserver.TCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Mailbox)
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_an_alert_is_e_mailed_when_smtp_is_configured(database, mail_server):
    port = mail_server.server_address[1]
    settings = database.model_copy(
        update={"smtp_host": f"127.0.0.1:{port}", "alert_email": "oncall@example.net"}
    )

    assert orchestration.send_alert("[customer360] run failed", "task x failed", settings)

    [raw] = mail_server.messages
    sent = message_from_bytes(raw)
    assert (sent["Subject"], sent["To"], sent["From"]) == (
        "[customer360] run failed",
        "oncall@example.net",
        "oncall@example.net",
    )
    assert sent.get_payload().strip() == "task x failed"


def test_a_mail_server_that_is_down_loses_the_alert_quietly(database, mail_server):
    port = mail_server.server_address[1]
    mail_server.shutdown()
    mail_server.server_close()
    settings = database.model_copy(
        update={"smtp_host": f"127.0.0.1:{port}", "alert_email": "oncall@example.net"}
    )

    # Logged, never raised: the alert must not hide the failure it reports.
    assert orchestration.send_alert("[customer360] run failed", "task x failed", settings) is False
