"""Loading the raw vault from staged rows: hubs, links and insert-only satellites.

Every statement is idempotent: running it again for the same batch adds nothing, so a
retried Airflow task or a reloaded file never duplicates vault rows. Only one batch loads at
a time (see ``pipeline.start_batch``), so a plain anti-join decides what is new; it costs
half of ``on conflict do nothing``, which probes the index twice per row.
"""

from __future__ import annotations


def _new_keys_statement(table: str, key: str, columns: str, staging: str) -> str:
    """Insert the staged rows whose key ``table`` does not hold yet (staging holds each key
    once per batch: the quality checks resolve duplicates)."""
    staged_columns = ", ".join(f"stg.{column.strip()}" for column in columns.split(","))
    return f"""
        insert into raw_vault.{table} ({key}, {columns}, load_dts, record_source)
        select stg.{key}, {staged_columns}, %(load_dts)s, stg.record_source
        from staging.{staging} as stg
        where stg.batch_id = %(batch_id)s
          and not exists (
              select 1 from raw_vault.{table} as existing where existing.{key} = stg.{key}
          )
    """


HUB_STATEMENTS = {
    "hub_customer": _new_keys_statement(
        "hub_customer", "customer_hk", "customer_id", "stg_customers"
    ),
    "hub_product": _new_keys_statement("hub_product", "product_hk", "product_id", "stg_products"),
    "hub_order": _new_keys_statement("hub_order", "order_hk", "order_id", "stg_transactions"),
}

LINK_STATEMENTS = {
    "link_customer_order": _new_keys_statement(
        "link_customer_order", "customer_order_hk", "customer_hk, order_hk", "stg_transactions"
    ),
    "link_order_product": _new_keys_statement(
        "link_order_product", "order_product_hk", "order_hk, product_hk", "stg_transactions"
    ),
}


def _satellite_statement(satellite: str, staging: str, key: str, payload: str) -> str:
    """Insert a staged row only when its hashdiff differs from the key's latest satellite row."""
    return f"""
        insert into raw_vault.{satellite} ({key}, load_dts, hashdiff, record_source, {payload})
        select stg.{key}, %(load_dts)s, stg.hashdiff, stg.record_source,
               {", ".join(f"stg.{column.strip()}" for column in payload.split(","))}
        from staging.{staging} as stg
        left join lateral (
            select sat.hashdiff
            from raw_vault.{satellite} as sat
            where sat.{key} = stg.{key}
            order by sat.load_dts desc
            limit 1
        ) as latest on true
        where stg.batch_id = %(batch_id)s
          and latest.hashdiff is distinct from stg.hashdiff
    """


SATELLITE_STATEMENTS = {
    "sat_customer_details": _satellite_statement(
        "sat_customer_details",
        "stg_customers",
        "customer_hk",
        "first_name, last_name, email, phone, city, state, country, signup_date, customer_segment",
    ),
    "sat_product_details": _satellite_statement(
        "sat_product_details",
        "stg_products",
        "product_hk",
        "product_name, category, brand, unit_price, cost",
    ),
    "sat_order_details": _satellite_statement(
        "sat_order_details",
        "stg_transactions",
        "order_hk",
        "quantity, unit_price, discount, total_amount, transaction_ts, payment_method, "
        "order_status",
    ),
}


# Every raw vault table, in load order.
VAULT_TABLES = (*HUB_STATEMENTS, *LINK_STATEMENTS, *SATELLITE_STATEMENTS)


def run_statements(cursor, statements: dict[str, str], batch_id: int, load_dts) -> dict[str, int]:
    """Run each statement for the batch; returns the rows each one inserted."""
    inserted: dict[str, int] = {}
    for table, statement in statements.items():
        cursor.execute(statement, {"batch_id": batch_id, "load_dts": load_dts})
        inserted[table] = cursor.rowcount
    return inserted
