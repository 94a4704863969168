"""Post-load reconciliation: what was staged for a batch must be exactly what reached the vault."""

from __future__ import annotations

from customer360.quality import GHOST_KEY

# Each check: name -> (SQL for the expected value, SQL for the actual value).
CHECKS: dict[str, tuple[str, str]] = {
    "hub_customer_has_every_staged_customer": (
        "select count(*) from staging.stg_customers where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_customers as stg
           join raw_vault.hub_customer using (customer_hk) where stg.batch_id = %(batch_id)s""",
    ),
    "hub_product_has_every_staged_product": (
        "select count(*) from staging.stg_products where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_products as stg
           join raw_vault.hub_product using (product_hk) where stg.batch_id = %(batch_id)s""",
    ),
    "hub_order_has_every_staged_order": (
        "select count(*) from staging.stg_transactions where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_transactions as stg
           join raw_vault.hub_order using (order_hk) where stg.batch_id = %(batch_id)s""",
    ),
    "link_customer_order_has_every_staged_order": (
        "select count(*) from staging.stg_transactions where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_transactions as stg
           join raw_vault.link_customer_order using (customer_order_hk)
           where stg.batch_id = %(batch_id)s""",
    ),
    "link_order_product_has_every_staged_order": (
        "select count(*) from staging.stg_transactions where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_transactions as stg
           join raw_vault.link_order_product using (order_product_hk)
           where stg.batch_id = %(batch_id)s""",
    ),
    "sat_customer_details_current_for_every_staged_customer": (
        "select count(*) from staging.stg_customers where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_customers as stg
           cross join lateral (
               select hashdiff from raw_vault.sat_customer_details as sat
               where sat.customer_hk = stg.customer_hk order by load_dts desc limit 1
           ) as latest
           where stg.batch_id = %(batch_id)s and latest.hashdiff = stg.hashdiff""",
    ),
    "sat_product_details_current_for_every_staged_product": (
        "select count(*) from staging.stg_products where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_products as stg
           cross join lateral (
               select hashdiff from raw_vault.sat_product_details as sat
               where sat.product_hk = stg.product_hk order by load_dts desc limit 1
           ) as latest
           where stg.batch_id = %(batch_id)s and latest.hashdiff = stg.hashdiff""",
    ),
    "sat_order_details_current_for_every_staged_order": (
        "select count(*) from staging.stg_transactions where batch_id = %(batch_id)s",
        """select count(*) from staging.stg_transactions as stg
           cross join lateral (
               select hashdiff from raw_vault.sat_order_details as sat
               where sat.order_hk = stg.order_hk order by load_dts desc limit 1
           ) as latest
           where stg.batch_id = %(batch_id)s and latest.hashdiff = stg.hashdiff""",
    ),
    "order_amount_total_matches_staging": (
        """select coalesce(sum(total_amount), 0) from staging.stg_transactions
           where batch_id = %(batch_id)s""",
        """select coalesce(sum(latest.total_amount), 0) from staging.stg_transactions as stg
           cross join lateral (
               select total_amount from raw_vault.sat_order_details as sat
               where sat.order_hk = stg.order_hk order by load_dts desc limit 1
           ) as latest
           where stg.batch_id = %(batch_id)s""",
    ),
    "ghost_linked_orders_are_reported": (
        f"""select count(*) from staging.stg_transactions where batch_id = %(batch_id)s
            and (customer_hk = '{GHOST_KEY}' or product_hk = '{GHOST_KEY}')""",
        """select count(*) from audit.quarantine
           where batch_id = %(batch_id)s and disposition = 'ghost_linked'""",
    ),
}

# Every data row of every file is either staged or rejected: nothing is lost.
ROWS_ACCOUNTED_FOR = """
    select (select count(*) from staging.stg_{source} where batch_id = %(batch_id)s)
         + (select count(*) from audit.quarantine
            where batch_id = %(batch_id)s and source = '{source}' and disposition = 'rejected')
"""


def reconcile_batch(cursor, batch_id: int, data_rows: dict[str, int]) -> list[dict]:
    """Run every check, store the results in ``audit.reconciliation`` and return them."""
    params = {"batch_id": batch_id}
    results = []
    for source, expected in data_rows.items():
        cursor.execute(ROWS_ACCOUNTED_FOR.format(source=source), params)
        results.append(_result(f"{source}_rows_accounted_for", expected, cursor.fetchone()[0]))
    for name, (expected_sql, actual_sql) in CHECKS.items():
        cursor.execute(expected_sql, params)
        expected = cursor.fetchone()[0]
        cursor.execute(actual_sql, params)
        results.append(_result(name, expected, cursor.fetchone()[0]))
    cursor.execute("delete from audit.reconciliation where batch_id = %s", (batch_id,))
    cursor.executemany(
        """insert into audit.reconciliation (batch_id, check_name, expected, actual, passed)
           values (%s, %s, %s, %s, %s)""",
        [(batch_id, r["check"], r["expected"], r["actual"], r["passed"]) for r in results],
    )
    return results


def _result(check: str, expected, actual) -> dict:
    return {
        "check": check,
        "expected": float(expected),
        "actual": float(actual),
        "passed": expected == actual,
    }
