"""Loading the raw vault from staged rows: hubs, links and insert-only satellites.

Every statement is idempotent: running it again for the same batch adds nothing, so a
retried Airflow task or a reloaded file never duplicates vault rows. Only one batch loads at
a time (see ``pipeline.start_batch``), so a plain anti-join decides what is new; it costs
half of ``on conflict do nothing``, which probes the index twice per row.

A batch more than twice the size of the table it loads (a first load) is a bulk load: the
table's indexes are dropped first and built again from the loaded rows
(``raw_vault.drop_indexes``), which is about three times faster than maintaining them row
by row, and an empty table is truncated first, so that its rows skip the write-ahead log.
"""

from __future__ import annotations

from dataclasses import dataclass

from customer360.quality import GHOST_BUSINESS_KEY


@dataclass(frozen=True)
class VaultInsert:
    """How one vault table takes a batch's new rows from staging."""

    staging: str
    statement: str  # reads the table through its indexes
    bulk_statement: str  # the same rows, read set-wise: for a table without its indexes


def _new_keys(table: str, key: str, columns: str, staging: str) -> VaultInsert:
    """Insert the staged rows whose key ``table`` does not hold yet (staging holds each key
    once per batch: the quality checks resolve duplicates). Without the index, PostgreSQL
    plans the same anti-join as a hash join."""
    staged_columns = ", ".join(f"stg.{column.strip()}" for column in columns.split(","))
    statement = f"""
        insert into raw_vault.{table} ({key}, {columns}, load_dts, record_source)
        select stg.{key}, {staged_columns}, %(load_dts)s, stg.record_source
        from staging.{staging} as stg
        where stg.batch_id = %(batch_id)s
          and not exists (
              select 1 from raw_vault.{table} as existing where existing.{key} = stg.{key}
          )
    """
    return VaultInsert(staging, statement, statement)


HUB_INSERTS = {
    "hub_customer": _new_keys("hub_customer", "customer_hk", "customer_id", "stg_customers"),
    "hub_product": _new_keys("hub_product", "product_hk", "product_id", "stg_products"),
    "hub_order": _new_keys("hub_order", "order_hk", "order_id", "stg_transactions"),
}


def _late_links(hub: str, link: str, link_key: str, delivered: str) -> str:
    """SQL: the orders to link now to a customer (or product, ``hub``) that this batch stages,
    which an earlier batch linked to the ghost record because they named it before it was
    known. An order qualifies when its latest ghost-linked delivery, in a batch whose links
    step committed, named that key, when its current link (``delivered``) is still the ghost's,
    and when this batch does not deliver it again (its staged row decides then). Columns: the
    new link's key, ``{hub}_hk``, ``order_hk`` and the record source of the order's ghost
    link. Known keys are read from staging, not from the hub, which the hubs step, running
    beside the links step, may hold locked for a bulk load."""
    link_hash, ghost_link_hash = {
        "customer": (
            "raw_vault.hash_key(named.customer_id, named.order_id)",
            f"raw_vault.hash_key('{GHOST_BUSINESS_KEY}', named.order_id)",
        ),
        "product": (
            "raw_vault.hash_key(named.order_id, named.product_id)",
            f"raw_vault.hash_key(named.order_id, '{GHOST_BUSINESS_KEY}')",
        ),
    }[hub]
    return f"""
        with named as (
            select distinct on (raw_vault.hash_key(ghosted.business_key))
                   raw_vault.hash_key(ghosted.business_key) as order_hk,
                   ghosted.business_key as order_id,
                   ghosted.raw_row ->> '{hub}_id' as {hub}_id
            from audit.quarantine as ghosted
            join audit.load_batch as batch using (batch_id)
            where ghosted.source = 'transactions' and ghosted.disposition = 'ghost_linked'
              and ghosted.batch_id < %(batch_id)s
              and batch.row_counts -> 'inserted' ? '{link}'
            order by raw_vault.hash_key(ghosted.business_key), ghosted.batch_id desc,
                     ghosted.line_number desc
        ),

        -- The orders whose named key this batch stages and that have a link to the ghost
        -- (a ghost-linked delivery may have named a known customer and an unknown product).
        arrived as (
            select {link_hash} as {link_key}, stg.{hub}_hk, named.order_hk,
                   ghost_link.{link_key} as ghost_link_key, ghost_link.record_source
            from named
            join staging.stg_{hub}s as stg
              on stg.batch_id = %(batch_id)s
             and stg.{hub}_hk = raw_vault.hash_key(named.{hub}_id)
            join raw_vault.{link} as ghost_link on ghost_link.{link_key} = {ghost_link_hash}
            where named.order_hk not in (
                select order_hk from staging.stg_transactions where batch_id = %(batch_id)s
            )
        ),

        current_link as (
            select distinct on (order_hk) order_hk, {link_key}
            from business_vault.{delivered}
            where order_hk in (select order_hk from arrived)
            order by order_hk, delivered_dts desc
        )

        -- The new link takes the record source of the ghost link: the relationship comes
        -- from the order's delivery.
        select arrived.{link_key}, arrived.{hub}_hk, arrived.order_hk, arrived.record_source
        from arrived
        join current_link using (order_hk)
        where current_link.{link_key} = arrived.ghost_link_key
    """


def _order_link(link: str, link_key: str, columns: str, hub: str, delivered: str) -> VaultInsert:
    """A link's new rows: the staged orders' new relationships, and those of the orders whose
    customer (or product, ``hub``) arrived late that the link does not hold yet."""
    late_columns = ", ".join(f"late.{column.strip()}" for column in columns.split(","))
    statement = f"""
        {_new_keys(link, link_key, columns, "stg_transactions").statement}
        union all
        select late.{link_key}, {late_columns}, %(load_dts)s, late.record_source
        from ({_late_links(hub, link, link_key, delivered)}) as late
        where not exists (
            select from raw_vault.{link} as existing where existing.{link_key} = late.{link_key}
        )
    """
    return VaultInsert("stg_transactions", statement, statement)


def _delivered_again(
    satellite: str, link: str, link_key: str, hub: str, delivered: str
) -> VaultInsert:
    """Record the order links that an earlier load delivered but that are not their order's
    latest delivered link (``delivered``: each link with the load that last delivered it):
    the order had moved to another customer or product and came back, either delivered again
    or, linked to the ghost meanwhile, by the late arrival of that customer or product. A
    relationship delivered for the first time is recorded by its link row alone."""
    statement = f"""
        with latest_before as (
            select distinct on (order_hk) order_hk, {link_key}
            from business_vault.{delivered}
            where delivered_dts < %(load_dts)s
              and order_hk in (
                  select order_hk from staging.stg_transactions where batch_id = %(batch_id)s
              )
            order by order_hk, delivered_dts desc
        ),

        again as (
            select stg.{link_key}, stg.record_source
            from staging.stg_transactions as stg
            join latest_before using (order_hk)
            where stg.batch_id = %(batch_id)s
              and latest_before.{link_key} <> stg.{link_key}
            union all
            select late.{link_key}, late.record_source
            from ({_late_links(hub, link, link_key, delivered)}) as late
        )

        -- The link's load, as a subquery per row: one index probe each, where the planner,
        -- misjudging how few rows come again, would hash the whole link table.
        insert into raw_vault.{satellite} ({link_key}, load_dts, record_source)
        select again.{link_key}, %(load_dts)s, again.record_source
        from again
        where (
              select earlier.load_dts from raw_vault.{link} as earlier
              where earlier.{link_key} = again.{link_key}
          ) < %(load_dts)s
          and not exists (
              select from raw_vault.{satellite} as recorded
              where recorded.{link_key} = again.{link_key} and recorded.load_dts = %(load_dts)s
          )
    """
    return VaultInsert("stg_transactions", statement, statement)


# Each link, then its effectivity satellite. The two links load side by side, each in a
# transaction of its own.
CUSTOMER_ORDER_LINK_INSERTS = {
    "link_customer_order": _order_link(
        "link_customer_order",
        "customer_order_hk",
        "customer_hk, order_hk",
        "customer",
        "vw_customer_order_delivered",
    ),
    "sat_customer_order_effectivity": _delivered_again(
        "sat_customer_order_effectivity",
        "link_customer_order",
        "customer_order_hk",
        "customer",
        "vw_customer_order_delivered",
    ),
}
ORDER_PRODUCT_LINK_INSERTS = {
    "link_order_product": _order_link(
        "link_order_product",
        "order_product_hk",
        "order_hk, product_hk",
        "product",
        "vw_order_product_delivered",
    ),
    "sat_order_product_effectivity": _delivered_again(
        "sat_order_product_effectivity",
        "link_order_product",
        "order_product_hk",
        "product",
        "vw_order_product_delivered",
    ),
}
LINK_INSERTS = {**CUSTOMER_ORDER_LINK_INSERTS, **ORDER_PRODUCT_LINK_INSERTS}


def latest_satellite_rows(
    satellite: str, key: str, columns: str, set_wise: bool, one_load: bool = False
) -> str:
    """A left join of ``stg`` to the latest row of each key in ``satellite`` (as ``latest``,
    with ``columns``): one index probe per staged row, or, ``set_wise``, one pass over the
    whole satellite, which is cheaper when the batch is large next to the satellite (and
    the only way when its index has been dropped for a bulk load). ``one_load``: every row
    of the satellite has the same load_dts (a first load), so each key has at most one row,
    its latest, and the pass needs no sort."""
    if one_load:
        return f"left join raw_vault.{satellite} as latest on latest.{key} = stg.{key}"
    if set_wise:
        return f"""
            left join (
                select distinct on ({key}) {key}, {columns}
                from raw_vault.{satellite}
                order by {key}, load_dts desc
            ) as latest on latest.{key} = stg.{key}
        """
    return f"""
        left join lateral (
            select {columns}
            from raw_vault.{satellite} as sat
            where sat.{key} = stg.{key}
            order by sat.load_dts desc
            limit 1
        ) as latest on true
    """


def _satellite(satellite: str, staging: str, key: str, payload: str) -> VaultInsert:
    """Insert a staged row only when its hashdiff differs from the key's latest satellite row."""
    insert = f"""
        insert into raw_vault.{satellite} ({key}, load_dts, hashdiff, record_source, {payload})
        select stg.{key}, %(load_dts)s, stg.hashdiff, stg.record_source,
               {", ".join(f"stg.{column.strip()}" for column in payload.split(","))}
        from staging.{staging} as stg
    """
    newer = """
        where stg.batch_id = %(batch_id)s
          and latest.hashdiff is distinct from stg.hashdiff
    """
    return VaultInsert(
        staging,
        insert + latest_satellite_rows(satellite, key, "hashdiff", set_wise=False) + newer,
        insert + latest_satellite_rows(satellite, key, "hashdiff", set_wise=True) + newer,
    )


SATELLITE_INSERTS = {
    "sat_customer_details": _satellite(
        "sat_customer_details",
        "stg_customers",
        "customer_hk",
        "first_name, last_name, email, phone, city, state, country, signup_date, customer_segment",
    ),
    "sat_product_details": _satellite(
        "sat_product_details",
        "stg_products",
        "product_hk",
        "product_name, category, brand, unit_price, cost",
    ),
    "sat_order_details": _satellite(
        "sat_order_details",
        "stg_transactions",
        "order_hk",
        "quantity, unit_price, discount, total_amount, transaction_ts, payment_method, "
        "order_status",
    ),
}


# Every raw vault table, in load order.
VAULT_TABLES = (*HUB_INSERTS, *LINK_INSERTS, *SATELLITE_INSERTS)


def insert_new_rows(
    cursor, inserts: dict[str, VaultInsert], batch_id: int, load_dts
) -> dict[str, int]:
    """Insert the batch's new rows into each table; returns the rows each one took."""
    params = {"batch_id": batch_id, "load_dts": load_dts}
    inserted: dict[str, int] = {}
    for table, insert in inserts.items():
        # A batch twice the table's size: a first load, not a full snapshot restated.
        if batch_outnumbers(cursor, insert.staging, table, factor=2.0):
            cursor.execute("call raw_vault.drop_indexes(%s)", (f"raw_vault.{table}",))
            # An empty table truncated in the loading transaction is filled without writing
            # its rows to the WAL (wal_level = minimal: it is synced to disk at commit).
            cursor.execute(f"select not exists (select from raw_vault.{table})")
            if cursor.fetchone()[0]:
                cursor.execute(f"truncate raw_vault.{table}")
            cursor.execute(insert.bulk_statement, params)
            inserted[table] = cursor.rowcount
            cursor.execute("call raw_vault.build_indexes(%s)", (f"raw_vault.{table}",))
        else:
            cursor.execute(insert.statement, params)
            inserted[table] = cursor.rowcount
    return inserted


def batch_outnumbers(cursor, staging: str, table: str, factor: float = 1.0) -> bool:
    """Whether the rows staged in ``staging`` outnumber ``factor`` times the rows of the vault
    ``table``. Both come from the estimates of the last ANALYZE (staging is analysed after
    the quality checks, the vault after every load); a never-analysed table counts as
    empty."""
    cursor.execute(
        """
        select staged.reltuples > %s * greatest(target.reltuples, 0)
        from pg_class as staged, pg_class as target
        where staged.oid = %s::regclass and target.oid = %s::regclass
        """,
        (factor, f"staging.{staging}", f"raw_vault.{table}"),
    )
    return cursor.fetchone()[0]
