"""Post-load reconciliation: what was staged for a batch must be exactly what reached the vault.

One pass per source joins each staged row to its hub, its links and the latest version of its
satellite, and counts what it finds; every count must equal the number of staged rows.

When a source's vault tables hold exactly its staged rows (a first load), row counts and hash
totals, the classic batch control, show it reading each table once instead of joining it to
staging; the joins run whenever the totals differ, and count what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from customer360.quality import GHOST_KEY
from customer360.vault import batch_outnumbers, latest_satellite_rows


@dataclass(frozen=True)
class SourceChecks:
    """How one source's staged rows are found in the vault."""

    noun: str  # what one staged row is, for the check names
    staging: str
    key: str
    satellite: str
    joins: dict[str, tuple[str, str]]  # check name -> (vault table, join column)
    amounts: bool = False  # also reconcile the order amounts


SOURCES = {
    "customers": SourceChecks(
        "customer",
        "stg_customers",
        "customer_hk",
        "sat_customer_details",
        {"hub_customer_has_every_staged_customer": ("hub_customer", "customer_hk")},
    ),
    "products": SourceChecks(
        "product",
        "stg_products",
        "product_hk",
        "sat_product_details",
        {"hub_product_has_every_staged_product": ("hub_product", "product_hk")},
    ),
    "transactions": SourceChecks(
        "order",
        "stg_transactions",
        "order_hk",
        "sat_order_details",
        {
            "hub_order_has_every_staged_order": ("hub_order", "order_hk"),
            "link_customer_order_has_every_staged_order": (
                "link_customer_order",
                "customer_order_hk",
            ),
            "link_order_product_has_every_staged_order": ("link_order_product", "order_product_hk"),
        },
        amounts=True,
    ),
}


def _one_pass(source: SourceChecks, set_wise: bool, one_load: bool) -> str:
    """Counts of the staged rows and of those found in each vault table, in one statement."""
    found = [
        f"count(j{number}.{column}) as {name}"
        for number, (name, (_, column)) in enumerate(source.joins.items())
    ]
    joins = "\n".join(
        f"left join raw_vault.{table} as j{number} on j{number}.{column} = stg.{column}"
        for number, (table, column) in enumerate(source.joins.values())
    )
    latest_columns = "hashdiff, total_amount" if source.amounts else "hashdiff"
    amounts = (
        ", coalesce(sum(stg.total_amount), 0) as staged_amount,"
        " coalesce(sum(latest.total_amount), 0) as vault_amount"
        if source.amounts
        else ""
    )
    return f"""
        select count(*) as staged,
               {", ".join(found)},
               count(*) filter (where latest.hashdiff = stg.hashdiff) as satellite_current
               {amounts}
        from staging.{source.staging} as stg
        {joins}
        {latest_satellite_rows(source.satellite, source.key, latest_columns, set_wise, one_load)}
        where stg.batch_id = %(batch_id)s
    """


# True when every row of a satellite has the same load_dts (or it has none): it holds one load.
HOLDS_ONE_LOAD = "coalesce(min(load_dts) = max(load_dts), true)"


def _hash_total(column: str) -> str:
    """The sum of a 64-bit hash of each value: equal sums of equally many distinct keys mean
    the same keys (barring a 64-bit collision)."""
    return f"sum(uuid_hash_extended({column}, 0))"


def _pair_hash_total(key: str) -> str:
    """The hash total of the (key, hashdiff) pairs."""
    return f"sum(uuid_hash_extended(hashdiff, uuid_hash_extended({key}, 0)))"


def counts_by_hash_totals(cursor, source: SourceChecks, batch_id: int) -> dict | None:
    """The counts of ``_one_pass``, when each hub and link holds as many rows as were staged,
    with the same hash total of keys, and the satellite holds one load (one row per key, so
    its latest) of as many rows with the same hash total of (key, hashdiff) pairs; otherwise
    None."""
    hub = next(iter(source.joins.values()))[0]
    if not batch_outnumbers(cursor, source.staging, hub, factor=0.9):
        return None  # the hub holds more than this batch (by the planner's estimates)
    amount = ", sum(total_amount)" if source.amounts else ""
    keys = ", ".join(_hash_total(column) for _, column in source.joins.values())
    cursor.execute(
        f"select count(*), {keys}, {_pair_hash_total(source.key)}{amount}"
        f" from staging.{source.staging} where batch_id = %s",
        (batch_id,),
    )
    staged, *staged_totals = cursor.fetchone()
    if source.amounts:
        *staged_totals, staged_amount = staged_totals
    vault_totals = []
    for table, column in source.joins.values():
        cursor.execute(f"select count(*), {_hash_total(column)} from raw_vault.{table}")
        rows, total = cursor.fetchone()
        if rows != staged:
            return None
        vault_totals.append(total)
    cursor.execute(
        f"select count(*), {_pair_hash_total(source.key)}{amount},"
        f" {HOLDS_ONE_LOAD} from raw_vault.{source.satellite}"
    )
    rows, total, *vault_amount, one_load = cursor.fetchone()
    if rows != staged or not one_load or vault_totals + [total] != staged_totals:
        return None
    counts = dict.fromkeys(["staged", *source.joins, "satellite_current"], staged)
    if source.amounts:
        counts |= {"staged_amount": staged_amount or 0, "vault_amount": vault_amount[0] or 0}
    return counts


# Every data row of every file is either staged or rejected: nothing is lost.
ROWS_ACCOUNTED_FOR = """
    select (select count(*) from staging.stg_{source} where batch_id = %(batch_id)s)
         + (select count(*) from audit.quarantine
            where batch_id = %(batch_id)s and source = '{source}' and disposition = 'rejected')
"""

# Every order linked to a ghost record is listed in the quarantine as 'ghost_linked'.
GHOST_LINKED = f"""
    select (select count(*) from staging.stg_transactions where batch_id = %(batch_id)s
            and (customer_hk = '{GHOST_KEY}' or product_hk = '{GHOST_KEY}')),
           (select count(*) from audit.quarantine
            where batch_id = %(batch_id)s and disposition = 'ghost_linked')
"""


def reconcile_batch(cursor, batch_id: int, data_rows: dict[str, int]) -> list[dict]:
    """Run every check, store the results in ``audit.reconciliation`` and return them."""
    params = {"batch_id": batch_id}
    results = []
    for source, expected in data_rows.items():
        cursor.execute(ROWS_ACCOUNTED_FOR.format(source=source), params)
        results.append(_result(f"{source}_rows_accounted_for", expected, cursor.fetchone()[0]))
    for checks in SOURCES.values():
        counts = counts_by_hash_totals(cursor, checks, batch_id)
        if counts is None:
            # A large batch finds the latest satellite rows in one pass.
            set_wise = batch_outnumbers(cursor, checks.staging, checks.satellite, factor=0.25)
            one_load = set_wise and _holds_one_load(cursor, checks.satellite)
            cursor.execute(_one_pass(checks, set_wise, one_load), params)
            names = [column.name for column in cursor.description]
            counts = dict(zip(names, cursor.fetchone(), strict=True))
        staged = counts["staged"]
        for name in checks.joins:
            results.append(_result(name, staged, counts[name]))
        results.append(
            _result(
                f"{checks.satellite}_current_for_every_staged_{checks.noun}",
                staged,
                counts["satellite_current"],
            )
        )
        if checks.amounts:
            results.append(
                _result(
                    "order_amount_total_matches_staging",
                    counts["staged_amount"],
                    counts["vault_amount"],
                )
            )
    cursor.execute(GHOST_LINKED, params)
    expected, actual = cursor.fetchone()
    results.append(_result("ghost_linked_orders_are_reported", expected, actual))
    cursor.execute("delete from audit.reconciliation where batch_id = %s", (batch_id,))
    cursor.executemany(
        """insert into audit.reconciliation (batch_id, check_name, expected, actual, passed)
           values (%s, %s, %s, %s, %s)""",
        [(batch_id, r["check"], r["expected"], r["actual"], r["passed"]) for r in results],
    )
    return results


def _holds_one_load(cursor, satellite: str) -> bool:
    """Whether every row of the satellite has the same load_dts (one scan, no sort)."""
    cursor.execute(f"select {HOLDS_ONE_LOAD} from raw_vault.{satellite}")
    return cursor.fetchone()[0]


def _result(check: str, expected, actual) -> dict:
    return {
        "check": check,
        "expected": float(expected),
        "actual": float(actual),
        "passed": expected == actual,
    }
