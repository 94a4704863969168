"""``c360 airflow``: run a real local Airflow for the platform's DAG and trigger it."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time

from customer360 import airflow_local
from customer360.errors import UserFacingError
from customer360.settings import get_settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    airflow = subparsers.add_parser(
        "airflow", help="start, stop or inspect the local Airflow; trigger the DAG"
    )
    actions = airflow.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser(
        "start", help="start `airflow standalone` in the background and print the UI login"
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=airflow_local.DEFAULT_START_TIMEOUT,
        help="seconds to wait for Airflow to be ready (default %(default).0f)",
    )
    start.set_defaults(handler=airflow_start)

    actions.add_parser("stop", help="stop the local Airflow").set_defaults(handler=airflow_stop)
    actions.add_parser("status", help="show whether the local Airflow runs").set_defaults(
        handler=airflow_status
    )

    trigger = actions.add_parser(
        "trigger", help=f"unpause and trigger {airflow_local.DAG_ID} through the REST API"
    )
    trigger.add_argument(
        "--date",
        type=date.fromisoformat,
        help="logical date (YYYY-MM-DD) whose landing folder to load; default: now",
    )
    trigger.add_argument("--wait", action="store_true", help="wait for the run to finish")
    trigger.add_argument(
        "--timeout", type=float, default=900.0, help="seconds --wait waits (default %(default).0f)"
    )
    trigger.set_defaults(handler=airflow_trigger)


def airflow_start(args: argparse.Namespace) -> int:
    state = airflow_local.start(get_settings(), timeout=args.timeout, progress=print)
    print(f"Airflow is running (pid {state.pid}); home {state.home}")
    print(f"  UI:    {state.url}/dags/{airflow_local.DAG_ID}")
    print(f"  login: {airflow_local.ADMIN_USERNAME} / {airflow_local.ADMIN_PASSWORD}")
    print("  stop it with `c360 airflow stop`")
    return 0


def airflow_stop(args: argparse.Namespace) -> int:
    if airflow_local.stop(get_settings()):
        print("Airflow stopped")
    else:
        print("Airflow was not running")
    return 0


def airflow_status(args: argparse.Namespace) -> int:
    state = airflow_local.status(get_settings())
    if not state.running:
        print(f"Airflow is not running (home {state.home}); start it with `c360 airflow start`")
        return 1
    health = ", ".join(f"{name} {value}" for name, value in sorted(state.components.items()))
    print(f"Airflow is running (pid {state.pid}) at {state.url}: {health or 'API not answering'}")
    return 0 if state.healthy else 1


def airflow_trigger(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not airflow_local.status(settings).running:
        raise UserFacingError("Airflow is not running; start it with `c360 airflow start`")
    client = airflow_local.AirflowClient(airflow_local.base_url(settings))
    logical_date = None
    if args.date:
        logical_date = datetime.combine(args.date, time(), tzinfo=UTC).isoformat()
    try:
        client.set_paused(False)
        run = client.trigger(logical_date=logical_date)
    except airflow_local.AirflowApiError as exc:
        raise UserFacingError(f"could not trigger {airflow_local.DAG_ID}: {exc}") from exc
    run_id = run["dag_run_id"]
    print(f"triggered {airflow_local.DAG_ID} run {run_id}")
    if not args.wait:
        return 0
    try:
        run = client.wait_for_run(run_id, timeout=args.timeout)
    except airflow_local.AirflowApiError as exc:
        raise UserFacingError(str(exc)) from exc
    for task_instance in client.task_instances(run_id):
        print(f"  {task_instance['task_id']:<28} {task_instance['state']}")
    print(f"run {run_id} {run['state']}")
    return 0 if run["state"] == "success" else 1
