"""``c360 demo``: the README's main job, from an empty machine to a running platform;
``c360 stop``: stop everything the demo started."""

from __future__ import annotations

import argparse
import time
import urllib.request
from pathlib import Path

from customer360.commands.warehouse import print_report
from customer360.embedded_db import EmbeddedDatabaseError, server_for_settings
from customer360.errors import UserFacingError
from customer360.generator import dataset_complete, generate_dataset, generate_next_day
from customer360.migrate import migrate
from customer360.pipeline import SupersededFilesError, run_batch
from customer360.processes import port_in_use
from customer360.services import c360_service
from customer360.settings import get_settings

DEMO_EVENTS = 5_000


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="set up and run the whole platform: database, load, API, Kafka stream, Airflow",
    )
    demo.add_argument("--no-airflow", action="store_true", help="skip starting Airflow")
    demo.add_argument("--no-stream", action="store_true", help="skip Kafka and the stream")
    demo.set_defaults(handler=run_demo)
    subparsers.add_parser("stop", help="stop every service the demo started").set_defaults(
        handler=stop_all
    )


def api_service(settings=None):
    return c360_service("api", "api", "serve", settings=settings)


def consumer_service(settings=None):
    return c360_service("stream-consumer", "stream", "consume", settings=settings)


def run_demo(args: argparse.Namespace) -> int:
    settings = get_settings()
    step = _Steps()

    with step("database"):
        if settings.uses_embedded_database:
            server_for_settings(settings).start()
        applied = migrate(settings)
        step.note(f"{settings.dsn}, {sum(a.changed for a in applied)} schema file(s) applied")

    data_dir = Path(settings.data_dir)
    next_day = data_dir / "next_day"
    with step("sample data"):
        # A data set cut short (Ctrl-C) is written again; the next day derives from day 1.
        fresh = not dataset_complete(data_dir)
        if fresh:
            generate_dataset(data_dir)
        if fresh or not dataset_complete(next_day, next_day=True):
            generate_next_day(data_dir, next_day)
        step.note(f"{data_dir} (day 1) and {next_day} (next day)")

    with step("load day 1"):
        try:
            print_report(run_batch(data_dir, settings))
        except SupersededFilesError:
            # A demo run before this one loaded it, then the next day: that stays current.
            step.note("loaded by an earlier run, before the next day; not loaded again")
    with step("load next day"):
        report = run_batch(next_day, settings)
    print_report(report)

    with step("REST API"):
        api = api_service(settings)
        if api.pid() is None and port_in_use(settings.api_host, settings.api_port):
            raise UserFacingError(
                f"{settings.api_host}:{settings.api_port} is taken by another program (the"
                " Compose stack?): stop it, or set C360_API_PORT to a free port"
            )
        api.start()
        _wait_for_http(f"http://{settings.api_host}:{settings.api_port}/health", 60, api)
        step.note(f"http://{settings.api_host}:{settings.api_port}/docs")

    if not args.no_stream:
        from customer360.kafka_broker import broker_for_settings
        from streaming.producer import produce

        with step("Kafka broker"):
            broker = broker_for_settings(settings)
            broker.start()
            step.note(broker.bootstrap_servers)
        with step("clickstream"):
            consumer_service(settings).start()
            sent = produce(count=DEMO_EVENTS, seed=42, settings=settings)
            step.note(f"{sent.sent:,} events produced; the consumer aggregates them")

    if not args.no_airflow:
        from customer360 import airflow_local

        with step("Airflow"):
            airflow_local.start(settings)
            step.note(f"{airflow_local.base_url(settings)}/dags/customer_data_pipeline")

    _print_summary(settings, airflow=not args.no_airflow, stream=not args.no_stream)
    return 0


def stop_all(args: argparse.Namespace) -> int:
    """Stop every service; one that cannot be stopped is reported and the others still are."""
    settings = get_settings()
    stopped, failed = [], []

    def stop(name: str, stop_service) -> None:
        try:
            if stop_service():
                stopped.append(name)
        except ImportError:
            pass  # an optional part that is not installed runs nothing
        except (UserFacingError, EmbeddedDatabaseError, OSError) as exc:
            failed.append(f"{name}: {exc}")

    for service in (consumer_service(settings), api_service(settings)):
        stop(service.name, service.stop)
    stop("airflow", lambda: _airflow_local().stop(settings))
    stop("kafka", lambda: _broker(settings).stop())
    if settings.uses_embedded_database:
        server = server_for_settings(settings)

        def stop_database() -> bool:
            if not server.is_running():
                return False
            server.stop()
            if server.is_running():
                raise EmbeddedDatabaseError(f"still running in {server.pgdata} after pg_ctl stop")
            return True

        stop("postgresql", stop_database)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    for problem in failed:
        print(f"not stopped: {problem}")
    return 1 if failed else 0


def _airflow_local():
    from customer360 import airflow_local

    return airflow_local


def _broker(settings):
    from customer360.kafka_broker import broker_for_settings

    return broker_for_settings(settings)


class _Steps:
    """Prints each step of the demo with its duration."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.notes: list[str] = []

    def __call__(self, name: str):
        self.name = name
        self.notes = []
        return self

    def note(self, text: str) -> None:
        self.notes.append(text)

    def __enter__(self):
        print(f"==> {self.name} ...", flush=True)
        self.step_started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            took = time.perf_counter() - self.step_started
            detail = f": {'; '.join(self.notes)}" if self.notes else ""
            print(f"    done in {took:.1f}s{detail}", flush=True)


def _wait_for_http(url: str, timeout: float, service) -> None:
    """Wait until ``url`` answers 200 while ``service`` runs (an answer after it has exited
    would come from another program)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.pid() is None:
            raise UserFacingError(f"{service.name} exited while starting; see {service.log_file}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise UserFacingError(f"{url} did not answer within {timeout:.0f}s; see {service.log_file}")


def _print_summary(settings, airflow: bool, stream: bool) -> None:
    from api.security import accepted_api_keys

    api = f"http://{settings.api_host}:{settings.api_port}"
    keys = accepted_api_keys(settings)
    key = keys[0] if keys else "(auth disabled)"
    print(
        f"""
The platform is running.

  REST API     {api}/docs   (header X-API-Key: {key})
               curl -H 'X-API-Key: {key}' {api}/customers?limit=5
  PostgreSQL   {settings.dsn}
               .venv/bin/c360 db psql, then for example:
                 select * from business_vault.vw_customer_360 order by lifetime_value desc limit 5;
                 select * from business_vault.vw_product_analytics where category_rank <= 3;
                 select * from business_vault.vw_order_analytics
                   order by transaction_ts desc limit 5;
                 select * from business_vault.vw_customer_history where not is_current limit 5;"""
    )
    if stream:
        print(
            f"""  Kafka        {settings.kafka_bootstrap_servers}, topic {settings.kafka_topic}
               select * from real_time_metrics order by minute_start desc limit 10;
               .venv/bin/c360 stream produce --count 1000   (more events)"""
        )
    if airflow:
        from customer360.airflow_local import ADMIN_PASSWORD, ADMIN_USERNAME

        print(
            f"  Airflow      http://127.0.0.1:{settings.airflow_port}/dags/customer_data_pipeline"
            f"  (login {ADMIN_USERNAME} / {ADMIN_PASSWORD})"
        )
    print("\n  Stop everything with: make stop\n")
