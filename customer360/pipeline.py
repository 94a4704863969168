"""The warehouse load, batch by batch: land the CSV files in staging, check them, load the
Data Vault, reconcile, and refresh the business views.

Each step is its own transaction and is idempotent, so the Airflow DAG can run them as
separate (retryable) tasks; ``run_batch`` runs them in order for the CLI.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path

import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import Json

from customer360.db import (
    CONNECTION_FAILURES,
    DatabaseUnavailableError,
    connect,
    reused_connections,
    transaction,
)
from customer360.errors import BatchInProgressError, UserFacingError
from customer360.landing import check_header, land_file
from customer360.quality import (
    ThresholdBreachedError,
    check_source,
    staging_specs,
)
from customer360.reconcile import reconcile_batch
from customer360.settings import Settings, get_settings
from customer360.sources import SOURCE_NAMES, load_source_specs
from customer360.vault import (
    CUSTOMER_ORDER_LINK_INSERTS,
    HUB_INSERTS,
    ORDER_PRODUCT_LINK_INSERTS,
    SATELLITE_INSERTS,
    VaultInsert,
    insert_new_rows,
)

log = logging.getLogger(__name__)

# Only one batch loads at a time; the CLI holds this advisory lock for the whole run. Its
# session also holds the lock (BATCH_LOCK_ID, batch id) while it loads that batch.
BATCH_LOCK_ID = 360_002

# The message of a batch whose loader holds that second lock: the batch is loading exactly as
# long as the lock is held, and once its session has ended (the process died, the database
# went away) nothing is loading it any more.
LOADING_IN_ONE_SESSION = "loading; abandoned if its loader's database session ends"

# A batch the DAG loads has no such session (each task connects on its own): one still
# 'running' this long after it started was left by a crashed load (the DAG's runs time out
# after an hour).
STALE_BATCH_AFTER = timedelta(hours=2)

ProgressCallback = Callable[[str, dict], None]

# Materialized views rebuilt from the order facts after each load: the customer profile's
# two parts (each a pass over every order), the profile that joins them, and the products.
CUSTOMER_PROFILE_PARTS = ("mv_customer_favourite_category", "mv_customer_order_metrics")
CUSTOMER_PROFILE = "mv_customer_360"
PRODUCT_VIEW = "mv_product_analytics"


class ReconciliationError(UserFacingError):
    """The vault does not hold exactly what was staged."""


class SupersededFilesError(UserFacingError):
    """The files are those an earlier batch loaded, and a later batch has loaded others since:
    loading them again would make their older values current. Nothing was loaded."""


def start_batch(
    data_dir: Path,
    settings: Settings | None = None,
    reload: bool = False,
    loader: psycopg2.extensions.connection | None = None,
    airflow_run_id: str | None = None,
) -> int:
    """Open a batch for the files in ``data_dir``; returns its id.

    Refuses while another batch is loading (from the CLI or the DAG), and, unless ``reload``,
    files an earlier batch loaded when a later batch has loaded other files since (loading the
    latest files again is allowed: it adds nothing). A batch still marked 'running' whose
    loader's session has ended, or, for a batch loaded without one, after
    ``STALE_BATCH_AFTER``, was left by a crashed load: it is closed as failed. Staging rows of
    earlier batches are cleared.

    ``loader`` is a connection that stays open until the batch ends (``run_batch``'s): it
    takes the batch's lock, so the batch counts as abandoned as soon as that session ends.
    ``airflow_run_id`` names the DAG run opening the batch: a batch that run opened before (its
    start task failed after opening it, and was retried) is closed as abandoned.
    """
    specs = load_source_specs(settings)
    for spec in specs.values():
        check_header(spec, spec.path_in(data_dir))
    checksums = None if reload else _checksums_if_loaded_before(specs, data_dir, settings)
    with transaction(settings) as cur:
        _refuse_unknown_time_zones(cur, specs)
        # Serialise batch starts, so two loads cannot both see "nothing running".
        cur.execute("lock table audit.load_batch in share row exclusive mode")
        # Indexes a stopped load had dropped for a bulk load are built again first.
        cur.execute("call raw_vault.build_indexes()")
        if airflow_run_id:
            # Nothing loads that batch: the run's later tasks wait for this one.
            cur.execute(
                """
                update audit.load_batch
                set status = 'failed', finished_at = clock_timestamp(),
                    message = 'abandoned: its Airflow run opened a new batch'
                where status = 'running' and airflow_run_id = %s
                """,
                (airflow_run_id,),
            )
        cur.execute(
            """
            select batch_id, started_at from audit.load_batch
            where status = 'running'
              and case when message = %(in_one_session)s
                       then exists (
                           select from pg_locks
                           where locktype = 'advisory' and granted
                             and database = (select oid from pg_database
                                             where datname = current_database())
                             and classid = %(lock_id)s and objid = batch_id and objsubid = 2)
                       else started_at > clock_timestamp() - %(stale_after)s
                  end
            order by batch_id limit 1
            """,
            {
                "in_one_session": LOADING_IN_ONE_SESSION,
                "lock_id": BATCH_LOCK_ID,
                "stale_after": STALE_BATCH_AFTER,
            },
        )
        running = cur.fetchone()
        if running:
            raise BatchInProgressError(
                f"batch {running[0]} has been loading since {running[1]:%Y-%m-%d %H:%M:%S %Z};"
                " try again when it has finished"
            )
        if checksums:
            _refuse_superseded_files(cur, checksums, data_dir)
        cur.execute(
            """
            update audit.load_batch
            set status = 'failed', finished_at = clock_timestamp(),
                message = case
                    when message = %s
                    then 'abandoned: its loader''s database session ended; a newer batch began'
                    else 'abandoned: still running long after it started; a newer batch began'
                end
            where status = 'running'
            """,
            (LOADING_IN_ONE_SESSION,),
        )
        for name in SOURCE_NAMES:
            cur.execute(f"truncate staging.raw_{name}, staging.stg_{name}")
        cur.execute(
            """
            insert into audit.load_batch (load_dts, data_dir, message, airflow_run_id)
            values (date_trunc('milliseconds', clock_timestamp()), %s, %s, %s)
            returning batch_id
            """,
            (
                str(Path(data_dir).resolve()),
                LOADING_IN_ONE_SESSION if loader else None,
                airflow_run_id,
            ),
        )
        batch_id = cur.fetchone()[0]
        if loader:
            # Taken before the batch is committed, so it is never seen without its lock.
            with loader.cursor() as lock:
                lock.execute("select pg_advisory_lock(%s, %s)", (BATCH_LOCK_ID, batch_id))
    log.info("batch %s started for %s", batch_id, data_dir)
    return batch_id


# A batch that wrote to the vault, whether or not it went on to succeed (one that failed at
# reconciliation keeps what its vault steps added).
REACHED_THE_VAULT = "row_counts ? 'inserted'"


def _refuse_unknown_time_zones(cur, specs) -> None:
    """Raise ``UserFacingError`` for a configured time zone PostgreSQL, which converts the
    timestamps, does not know: Python's list of zones is not quite the same ('localtime')."""
    for spec in specs.values():
        cur.execute("savepoint time_zone")
        try:
            cur.execute("select set_config('TimeZone', %s, true)", (spec.timezone,))
        except psycopg2.errors.InvalidParameterValue:
            cur.execute("rollback to savepoint time_zone")
            raise UserFacingError(
                f"source configuration: 'sources.{spec.name}.timezone' {spec.timezone!r} is not"
                " a time zone PostgreSQL knows; use an IANA name such as UTC or Europe/Berlin"
            ) from None
        cur.execute("rollback to savepoint time_zone")


def open_batch_of_airflow_run(airflow_run_id: str, settings: Settings | None = None) -> int | None:
    """The batch a DAG run opened that is still running, if any."""
    with transaction(settings) as cur:
        cur.execute(
            "select max(batch_id) from audit.load_batch"
            " where status = 'running' and airflow_run_id = %s",
            (airflow_run_id,),
        )
        return cur.fetchone()[0]


def _checksums_if_loaded_before(specs, data_dir: Path, settings: Settings | None) -> dict | None:
    """The SHA-256 of each source file, as landing records them, once any batch has reached
    the vault (a first load has nothing to compare with and skips reading the files twice)."""
    with transaction(settings) as cur:
        cur.execute(f"select exists (select from audit.load_batch where {REACHED_THE_VAULT})")
        if not cur.fetchone()[0]:
            return None
    checksums = {}
    for name, spec in specs.items():
        with spec.path_in(data_dir).open("rb") as source_file:
            checksums[name] = hashlib.file_digest(source_file, "sha256").hexdigest()
    return checksums


def _refuse_superseded_files(cur, checksums: dict[str, str], data_dir: Path) -> None:
    """Raise ``SupersededFilesError`` when the latest batch with these files that reached the
    vault is not the latest batch that reached the vault."""
    same_files = " and ".join(
        f"source_files -> '{name}' ->> 'sha256' = %({name})s" for name in checksums
    )
    cur.execute(
        f"""
        select batch_id, started_at,
               (select max(batch_id) from audit.load_batch where {REACHED_THE_VAULT})
        from audit.load_batch
        where {REACHED_THE_VAULT} and {same_files}
        order by batch_id desc limit 1
        """,
        checksums,
    )
    loaded = cur.fetchone()
    if loaded and loaded[0] != loaded[2]:
        raise SupersededFilesError(
            f"the files in {data_dir} are those batch {loaded[0]} loaded on"
            f" {loaded[1]:%Y-%m-%d %H:%M %Z}, and batch {loaded[2]} has loaded other files since:"
            " loading them again would make their older values current. Nothing was loaded;"
            " `c360 load --reload` loads them anyway"
        )


def load_staging(batch_id: int, source: str, settings: Settings | None = None) -> dict:
    """COPY one source file of the batch into staging; malformed records are quarantined."""
    started = time.perf_counter()
    spec = load_source_specs(settings)[source]
    with transaction(settings) as cur:
        data_dir = _batch_data_dir(cur, batch_id)
        cur.execute(f"delete from staging.raw_{source} where batch_id = %s", (batch_id,))
        cur.execute(
            "delete from audit.quarantine where batch_id = %s and source = %s"
            " and reason in ('malformed_row', 'invalid_encoding')",
            (batch_id, source),
        )
        result = land_file(cur, spec, spec.path_in(data_dir), batch_id)
        cur.execute(f"analyze staging.raw_{source}")
        counts = {
            "data_rows": result.data_rows,
            "landed": result.landed,
            "malformed": len(result.rejected),
        }
        file_info = {"path": result.path, "sha256": result.sha256, "bytes": result.bytes}
        cur.execute(
            """
            update audit.load_batch
            set source_files = source_files || jsonb_build_object(%(source)s, %(file)s::jsonb),
                row_counts = row_counts || jsonb_build_object(
                    'landed', coalesce(row_counts -> 'landed', '{}') ||
                              jsonb_build_object(%(source)s, %(counts)s::jsonb))
            where batch_id = %(batch_id)s
            """,
            {
                "source": source,
                "file": json.dumps(file_info),
                "counts": json.dumps(counts),
                "batch_id": batch_id,
            },
        )
        _record_timing(cur, batch_id, f"land_{source}", started)
    return counts


def check_staging(batch_id: int, settings: Settings | None = None) -> dict:
    """Quarantine failing rows, stage the rest, and enforce the row-count thresholds.

    Raises ``ThresholdBreachedError`` (after marking the batch failed) before the vault is
    touched when a source has fewer valid rows than its minimum.
    """
    started = time.perf_counter()
    # Customers and products first, because transactions refer to them.
    check_sources(batch_id, ("customers", "products"), settings)
    check_sources(batch_id, ("transactions",), settings)
    return close_checks(batch_id, started, settings)


def check_sources(batch_id: int, names: tuple[str, ...], settings: Settings | None = None) -> None:
    """Run the quality checks of these sources, each in shares of its keys, side by side.

    Rows a retried check had staged or quarantined for these sources are cleared first.
    """
    settings = settings or get_settings()
    specs = load_source_specs(settings)
    rules = staging_specs(specs)
    shares = settings.load_parallelism
    with transaction(settings) as cur:
        for name in names:
            cur.execute(
                "delete from audit.quarantine where batch_id = %s and source = %s"
                " and reason not in ('malformed_row', 'invalid_encoding')",
                (batch_id, name),
            )
            cur.execute(f"delete from staging.stg_{name} where batch_id = %s", (batch_id,))

    def check(name: str, share: int) -> None:
        with transaction(settings) as cur:
            check_source(cur, specs[name], rules[name], batch_id, share, shares)

    run_side_by_side([partial(check, name, share) for name in names for share in range(shares)])
    with transaction(settings) as cur:
        for name in names:
            # Fresh statistics keep the planner from guessing on tables filled moments ago.
            cur.execute(f"analyze staging.stg_{name}")


def close_checks(batch_id: int, started: float, settings: Settings | None = None) -> dict:
    """Once every source is checked: record the counts, and fail the batch when a source has
    fewer valid rows than its minimum (``started`` is when the checks began, for the stage
    timing)."""
    settings = settings or get_settings()
    with transaction(settings) as cur:
        staged = {}
        for name in SOURCE_NAMES:
            cur.execute(f"select count(*) from staging.stg_{name} where batch_id = %s", (batch_id,))
            staged[name] = cur.fetchone()[0]
        cur.execute(
            """
            select source, reason, disposition, count(*)
            from audit.quarantine where batch_id = %s
            group by source, reason, disposition order by source, reason
            """,
            (batch_id,),
        )
        quarantined: dict[str, dict[str, int]] = {}
        for source, reason, disposition, count in cur.fetchall():
            key = reason if disposition == "rejected" else f"{reason} (loaded, ghost-linked)"
            quarantined.setdefault(source, {})[key] = count
        cur.execute(
            """
            update audit.load_batch
            set row_counts = row_counts || jsonb_build_object('staged', %s::jsonb,
                                                              'quarantined', %s::jsonb)
            where batch_id = %s
            """,
            (json.dumps(staged), json.dumps(quarantined), batch_id),
        )
        _record_timing(cur, batch_id, "quality_checks", started)
    minimums = {
        "customers": settings.min_customers,
        "products": settings.min_products,
        "transactions": settings.min_transactions,
    }
    breaches = [
        f"{name}: {staged[name]:,} valid rows, at least {minimum:,} required"
        for name, minimum in minimums.items()
        if staged[name] < minimum
    ]
    if breaches:
        message = "row-count threshold breached (" + "; ".join(breaches) + "); vault not loaded"
        fail_batch(batch_id, message, settings)
        raise ThresholdBreachedError(f"batch {batch_id} failed: {message}")
    return {"staged": staged, "quarantined": quarantined}


def load_hubs(batch_id: int, settings: Settings | None = None) -> dict[str, int]:
    """Add the batch's new business keys to the hubs."""
    return _load_vault(batch_id, "hubs", (HUB_INSERTS,), settings)


def load_links(batch_id: int, settings: Settings | None = None) -> dict[str, int]:
    """Add the batch's new relationships to the links, each link side by side."""
    return _load_vault(
        batch_id, "links", (CUSTOMER_ORDER_LINK_INSERTS, ORDER_PRODUCT_LINK_INSERTS), settings
    )


def load_satellites(batch_id: int, settings: Settings | None = None) -> dict[str, int]:
    """Add a satellite row for every staged payload that differs from its key's latest one."""
    return _load_vault(batch_id, "satellites", (SATELLITE_INSERTS,), settings)


def reconcile(batch_id: int, settings: Settings | None = None) -> list[dict]:
    """Check the vault against staging; raises ``ReconciliationError`` when a check fails."""
    started = time.perf_counter()
    with transaction(settings) as cur:
        cur.execute(
            "select row_counts -> 'landed' from audit.load_batch where batch_id = %s", (batch_id,)
        )
        landed = cur.fetchone()[0] or {}
        data_rows = {source: counts["data_rows"] for source, counts in landed.items()}
        results = reconcile_batch(cur, batch_id, data_rows)
        _record_timing(cur, batch_id, "reconciliation", started)
    failed = [r for r in results if not r["passed"]]
    if failed:
        detail = "; ".join(
            f"{r['check']}: expected {r['expected']}, got {r['actual']}" for r in failed
        )
        fail_batch(batch_id, f"reconciliation failed: {detail}", settings)
        raise ReconciliationError(f"batch {batch_id} reconciliation failed: {detail}")
    return results


def refresh_business_views(
    batch_id: int,
    settings: Settings | None = None,
    alongside: Callable[[], object] | None = None,
) -> object:
    """Bring the business views up to date with the vault after a batch.

    The point-in-time tables and the order facts (only the orders the batch changed, in
    shares side by side) come first, side by side. The views all derive from them: the two
    parts of the customer profile and the product view are rebuilt side by side (with the
    facts' indexes when the facts were refilled in bulk), and the profile as soon as both of
    its parts are.

    ``alongside`` is a step that only reads the vault (the CLI's reconciliation), run all
    through the refresh, where a core is free while one step waits for another. Returns its
    result, or raises its error once the views are rebuilt.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    with transaction(settings) as cur:
        cur.execute("select load_dts from audit.load_batch where batch_id = %s", (batch_id,))
        (load_dts,) = cur.fetchone()
    outcome: list = []  # the result of ``alongside``, or the error it raised

    def beside() -> None:
        try:
            outcome.append(alongside())
        except Exception as error:
            outcome.append(error)

    def call(procedure: str, *arguments: object) -> None:
        with transaction(settings) as cur:
            cur.execute(f"call {procedure}({', '.join(['%s'] * len(arguments))})", arguments)

    def refresh_order_facts() -> None:
        with transaction(settings) as cur:
            cur.execute(
                "call business_vault.start_order_facts_refresh(%s, %s)", (load_dts, batch_id)
            )
            # As text: psycopg2 leaves a uuid[] it has no type for as its literal.
            orders = cur.fetchone()[0].strip("{}").split(",")
        if orders == [""]:
            return  # filled whole, or nothing changed: done
        shares = settings.load_parallelism
        run_side_by_side(
            [
                partial(
                    call,
                    "business_vault.rewrite_order_facts",
                    "{" + ",".join(orders[share::shares]) + "}",
                )
                for share in range(shares)
            ]
        )
        call("business_vault.finish_order_facts_refresh", load_dts)

    parts_left = len(CUSTOMER_PROFILE_PARTS)
    parts_lock = threading.Lock()

    def refresh_profile_part(view: str) -> None:
        nonlocal parts_left
        call("business_vault.refresh_view", view)
        with parts_lock:
            parts_left -= 1
            both_done = parts_left == 0
        if both_done:  # the part that ends last goes on to the profile
            call("business_vault.refresh_view", CUSTOMER_PROFILE)

    def refresh() -> None:
        run_side_by_side(
            [refresh_order_facts, partial(call, "business_vault.refresh_pit_tables", load_dts)]
        )
        with transaction(settings) as cur:
            cur.execute(
                "select index_name from audit.dropped_indexes where table_name = %s",
                ("business_vault.order_facts",),
            )
            dropped = [name for (name,) in cur.fetchall()]
        run_side_by_side(
            [partial(refresh_profile_part, view) for view in CUSTOMER_PROFILE_PARTS]
            + [partial(call, "business_vault.refresh_view", PRODUCT_VIEW)]
            + [partial(call, "raw_vault.build_index", index_name) for index_name in dropped],
            workers=settings.load_parallelism,
        )

    if alongside:
        run_side_by_side([refresh, beside])
    else:
        refresh()
    with transaction(settings) as cur:
        _record_timing(cur, batch_id, "refresh_views", started)
    if not outcome:
        return None
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def finish_batch(batch_id: int, settings: Settings | None = None) -> dict:
    """Mark the batch succeeded and store its run report; returns the report."""
    with transaction(settings) as cur:
        report = _build_report(cur, batch_id)
        report["status"] = "succeeded"
        cur.execute(
            """
            update audit.load_batch
            set status = 'succeeded', finished_at = clock_timestamp(), report = %s,
                message = 'loaded'
            where batch_id = %s
            """,
            (Json(report), batch_id),
        )
        cur.execute(
            "select extract(epoch from finished_at - started_at) from audit.load_batch"
            " where batch_id = %s",
            (batch_id,),
        )
        report["elapsed_seconds"] = round(float(cur.fetchone()[0]), 3)
    return report


def fail_batch(batch_id: int, message: str, settings: Settings | None = None) -> None:
    """Mark the batch failed with a message. A batch that fails before its vault loads (a
    breached threshold) leaves the vault as it was; one that fails later (reconciliation)
    keeps what its committed steps added, and the report says which checks failed."""
    # On a connection of its own: when the batch failed because the database went away, the
    # idle connections its steps would lend have gone with it.
    with transaction(settings, reuse_connection=False) as cur:
        report = _build_report(cur, batch_id)
        report["status"] = "failed"
        cur.execute(
            """
            update audit.load_batch
            set status = 'failed', finished_at = clock_timestamp(), message = %s, report = %s
            where batch_id = %s and status <> 'succeeded'
            """,
            (message, Json(report), batch_id),
        )


def run_batch(
    data_dir: Path,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    reload: bool = False,
) -> dict:
    """Load the files in ``data_dir`` as one batch, end to end; returns the run report.
    ``reload`` loads files an earlier batch loaded even after later batches (see start_batch)."""
    settings = settings or get_settings()
    notify = progress or (lambda stage, info: None)
    lock = connect(settings)
    # The session only holds locks: idle, not idle in a transaction a server timeout may end.
    lock.autocommit = True
    try:
        with lock.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(%s)", (BATCH_LOCK_ID,))
            if not cur.fetchone()[0]:
                raise UserFacingError("another batch is loading right now; try again when it ends")
        # The steps' many short transactions reuse connections rather than open new ones.
        with reused_connections(settings):
            batch_id = start_batch(Path(data_dir), settings, reload=reload, loader=lock)
            notify("start", {"batch_id": batch_id})
            try:
                _run_steps(batch_id, settings, notify)
            except (ThresholdBreachedError, ReconciliationError):
                raise
            except Exception as exc:
                _record_failure(batch_id, exc, settings)
                raise
            return finish_batch(batch_id, settings)
    finally:
        _release_locks(lock)


def _release_locks(lock: psycopg2.extensions.connection) -> None:
    """Release the batch locks before closing their session: a closed session's locks go only
    when its server process has exited, moments later, and a batch started right after (the
    next day's, by the same caller) would find the load lock still taken."""
    try:
        with lock.cursor() as cur:
            cur.execute("select pg_advisory_unlock_all()")
    except CONNECTION_FAILURES:
        pass  # the session is gone, and its locks with it
    finally:
        lock.close()


def _record_failure(batch_id: int, error: Exception, settings: Settings) -> None:
    """Mark the batch failed with the error that stopped it, if the database can be reached."""
    try:
        # On one line, as `c360 status` lists it (psycopg2's messages run over several).
        fail_batch(batch_id, f"{type(error).__name__}: {' '.join(str(error).split())}", settings)
    except (DatabaseUnavailableError, *CONNECTION_FAILURES):
        # The batch stays 'running' for now; its loader's session ended with the connections,
        # so the next start_batch closes it as abandoned.
        log.info("could not mark batch %s failed: the database is out of reach", batch_id)


def _run_steps(batch_id: int, settings: Settings, notify: ProgressCallback) -> None:
    """The steps of a batch after its start, each step's independent parts side by side."""
    # Customers and products are checked while transactions, which refer to them and are by
    # far the largest file, are still landing.
    checks_started: list[float] = []

    def land_and_check(source: str) -> dict:
        counts = load_staging(batch_id, source, settings)
        checks_started.append(time.perf_counter())
        check_sources(batch_id, (source,), settings)
        return counts

    landed = run_side_by_side(
        [
            partial(land_and_check, "customers"),
            partial(land_and_check, "products"),
            partial(load_staging, batch_id, "transactions", settings),
        ]
    )
    for source, counts in zip(SOURCE_NAMES, landed, strict=True):
        notify(f"land_{source}", counts)
    check_sources(batch_id, ("transactions",), settings)
    notify("quality_checks", close_checks(batch_id, min(checks_started), settings))
    # Hash keys are computed in staging and the vault has no foreign keys, so hubs, links and
    # satellites load side by side; reconciliation then checks them together.
    loads = (("hubs", load_hubs), ("links", load_links), ("satellites", load_satellites))
    inserted = run_side_by_side([partial(load, batch_id, settings) for _, load in loads])
    for (stage, _), counts in zip(loads, inserted, strict=True):
        notify(stage, counts)
    # The views read only the vault, so they are rebuilt while it is reconciled; a failed
    # reconciliation still fails the batch.
    checks = refresh_business_views(
        batch_id, settings, alongside=partial(reconcile, batch_id, settings)
    )
    notify("reconciliation", {"checks": len(checks)})
    notify("refresh_views", {})


def batch_report(batch_id: int | None = None, settings: Settings | None = None) -> dict:
    """The stored report of a batch (the latest one when no id is given)."""
    with transaction(settings) as cur:
        if batch_id is None:
            cur.execute("select max(batch_id) from audit.load_batch")
            batch_id = cur.fetchone()[0]
            if batch_id is None:
                raise UserFacingError("no batch has been loaded yet; run `c360 load`")
        cur.execute("select status, message from audit.load_batch where batch_id = %s", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise UserFacingError(f"there is no batch {batch_id}")
        report = _build_report(cur, batch_id)
        report["status"], report["message"] = row
        return report


def run_side_by_side(calls: list[Callable[[], object]], workers: int | None = None) -> list:
    """Run independent steps at once (at most ``workers`` at a time, in the order given),
    each on its own connection; returns their results in order, or raises the first step's
    error after all have ended."""
    if len(calls) == 1:
        return [calls[0]()]
    with ThreadPoolExecutor(max_workers=workers or len(calls)) as pool:
        # Each step sees the caller's context (its reused connections, see db.py).
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    return [future.result() for future in futures]


def _load_vault(
    batch_id: int, stage: str, groups: tuple[dict[str, VaultInsert], ...], settings
) -> dict:
    """Insert the batch's new rows into the tables of each group, each group in a transaction
    of its own, side by side; returns the rows each table took."""
    started = time.perf_counter()

    def load(inserts: dict[str, VaultInsert]) -> dict[str, int]:
        with transaction(settings) as cur:
            cur.execute(
                "select load_dts, status from audit.load_batch where batch_id = %s", (batch_id,)
            )
            load_dts, status = cur.fetchone()
            if status == "failed":
                raise UserFacingError(f"batch {batch_id} has failed; start a new batch")
            inserted = insert_new_rows(cur, inserts, batch_id, load_dts)
            for table, count in inserted.items():
                if count:
                    cur.execute(f"analyze raw_vault.{table}")
            cur.execute(
                """
                update audit.load_batch
                set row_counts = row_counts || jsonb_build_object(
                    'inserted', coalesce(row_counts -> 'inserted', '{}') || %s::jsonb)
                where batch_id = %s
                """,
                (json.dumps(inserted), batch_id),
            )
        return inserted

    inserted = {}
    for counts in run_side_by_side([partial(load, inserts) for inserts in groups]):
        inserted.update(counts)
    with transaction(settings) as cur:
        _record_timing(cur, batch_id, stage, started)
    return inserted


def _batch_data_dir(cur, batch_id: int) -> Path:
    cur.execute("select data_dir from audit.load_batch where batch_id = %s", (batch_id,))
    row = cur.fetchone()
    if row is None:
        raise UserFacingError(f"there is no batch {batch_id}")
    return Path(row[0])


def _record_timing(cur, batch_id: int, stage: str, started: float) -> None:
    cur.execute(
        """
        update audit.load_batch
        set stage_timings = stage_timings || jsonb_build_object(%s, %s)
        where batch_id = %s
        """,
        (stage, round(time.perf_counter() - started, 3), batch_id),
    )


def _build_report(cur, batch_id: int) -> dict:
    cur.execute(
        """
        select batch_id, load_dts, data_dir, source_files, row_counts, stage_timings
        from audit.load_batch where batch_id = %s
        """,
        (batch_id,),
    )
    batch_id, load_dts, data_dir, files, counts, timings = cur.fetchone()
    cur.execute(
        """
        select check_name, expected, actual, passed from audit.reconciliation
        where batch_id = %s order by check_name
        """,
        (batch_id,),
    )
    checks = [
        {"check": name, "expected": float(expected), "actual": float(actual), "passed": passed}
        for name, expected, actual, passed in cur.fetchall()
    ]
    return {
        "batch_id": batch_id,
        "load_dts": load_dts.isoformat(),
        "data_dir": data_dir,
        "source_files": files,
        "row_counts": counts,
        "stage_timings": timings,
        "reconciliation": checks,
    }
