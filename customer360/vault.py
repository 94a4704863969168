"""Loading the raw vault from staged rows: hubs, links and insert-only satellites.

Every statement is idempotent: running it again for the same batch adds nothing, so a
retried Airflow task or a reloaded file never duplicates vault rows.
"""

from __future__ import annotations

# Hubs: every staged business key not yet in the hub.
HUB_STATEMENTS = {
    "hub_customer": """
        insert into raw_vault.hub_customer (customer_hk, customer_id, load_dts, record_source)
        select customer_hk, customer_id, %(load_dts)s, record_source
        from staging.stg_customers
        where batch_id = %(batch_id)s
        on conflict (customer_hk) do nothing
    """,
    "hub_product": """
        insert into raw_vault.hub_product (product_hk, product_id, load_dts, record_source)
        select product_hk, product_id, %(load_dts)s, record_source
        from staging.stg_products
        where batch_id = %(batch_id)s
        on conflict (product_hk) do nothing
    """,
    "hub_order": """
        insert into raw_vault.hub_order (order_hk, order_id, load_dts, record_source)
        select order_hk, order_id, %(load_dts)s, record_source
        from staging.stg_transactions
        where batch_id = %(batch_id)s
        on conflict (order_hk) do nothing
    """,
}

# Links: every staged relationship not yet in the link.
LINK_STATEMENTS = {
    "link_customer_order": """
        insert into raw_vault.link_customer_order
            (customer_order_hk, customer_hk, order_hk, load_dts, record_source)
        select customer_order_hk, customer_hk, order_hk, %(load_dts)s, record_source
        from staging.stg_transactions
        where batch_id = %(batch_id)s
        on conflict (customer_order_hk) do nothing
    """,
    "link_order_product": """
        insert into raw_vault.link_order_product
            (order_product_hk, order_hk, product_hk, load_dts, record_source)
        select order_product_hk, order_hk, product_hk, %(load_dts)s, record_source
        from staging.stg_transactions
        where batch_id = %(batch_id)s
        on conflict (order_product_hk) do nothing
    """,
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
        on conflict ({key}, load_dts) do nothing
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


def run_statements(cursor, statements: dict[str, str], batch_id: int, load_dts) -> dict[str, int]:
    """Run each statement for the batch; returns the rows each one inserted."""
    inserted: dict[str, int] = {}
    for table, statement in statements.items():
        cursor.execute(statement, {"batch_id": batch_id, "load_dts": load_dts})
        inserted[table] = cursor.rowcount
    return inserted
