"""The API's query module against the loaded warehouse: keyset pagination over every listing
and sort (ties and nulls included) gives exactly the order independent SQL gives."""

from __future__ import annotations

import asyncio
import base64
import json

import psycopg
import pytest
from psycopg.rows import dict_row

from api import queries
from customer360.settings import Settings

# Independent statements of each listing's order, as the API documents it.
DOCUMENTED_ORDER = {
    ("customers", "customer_id"): "customer_id",
    ("customers", "lifetime_value"): "lifetime_value desc, customer_id asc",
    ("customers", "last_order_date"): "last_order_date desc nulls last, customer_id asc",
    ("orders", "transaction_ts"): "transaction_ts desc, order_id desc",
    ("products", "revenue"): "revenue desc, product_id asc",
    ("products", "units_sold"): "units_sold desc, product_id asc",
    ("products", "product_id"): "product_id asc",
}
VIEWS = {
    "customers": "business_vault.vw_customer_360",
    "orders": "business_vault.vw_order_analytics",
    "products": "business_vault.vw_product_analytics",
}


def walk_with_cursor(settings: Settings, listing: queries.Listing, sort: str, limit: int) -> list:
    async def walk() -> list:
        conn = await psycopg.AsyncConnection.connect(
            settings.dsn, autocommit=True, row_factory=dict_row
        )
        keys, cursor = [], None
        async with conn:
            while True:
                page = await queries.fetch_page(
                    conn, listing, queries.Filters(), sort=sort, skip=0, limit=limit, cursor=cursor
                )
                keys += [row[listing.key_column] for row in page.items]
                if page.next_cursor is None:
                    return keys
                cursor = page.next_cursor

    return asyncio.run(walk())


@pytest.mark.parametrize(("listing_name", "sort"), sorted(DOCUMENTED_ORDER))
def test_cursor_pages_follow_the_documented_order(
    loaded_warehouse: Settings, db_cursor, listing_name: str, sort: str
) -> None:
    listing = queries.LISTINGS[listing_name]
    db_cursor.execute(
        f"select {listing.key_column} from {VIEWS[listing_name]}"
        f" order by {DOCUMENTED_ORDER[(listing_name, sort)]}"
    )
    expected = [row[0] for row in db_cursor.fetchall()]
    # Large pages for the big order listing keep the walk short; odd sizes cut through ties.
    limit = 997 if listing_name == "orders" else 173
    assert walk_with_cursor(loaded_warehouse, listing, sort, limit) == expected


def test_the_listings_have_ties_and_the_customer_listing_nulls(
    loaded_warehouse: Settings, db_cursor
) -> None:
    # The walks above prove something only if the data has ties and nulls to cut through.
    db_cursor.execute(
        "select count(*) - count(distinct lifetime_value),"
        " count(*) filter (where last_order_date is null)"
        " from business_vault.vw_customer_360"
    )
    value_ties, null_dates = db_cursor.fetchone()
    assert value_ties > 0 and null_dates > 0
    db_cursor.execute(
        "select count(*) - count(distinct transaction_ts) from business_vault.vw_order_analytics"
    )
    assert db_cursor.fetchone()[0] > 0
    db_cursor.execute(
        "select count(*) - count(distinct revenue), count(*) - count(distinct units_sold)"
        " from business_vault.vw_product_analytics"
    )
    assert all(ties > 0 for ties in db_cursor.fetchone())


def token(payload: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "bad_token",
    [
        "not base64 at all!",
        token({"a": 1}),
        token(["orders", "transaction_ts", "2024-01-01T00:00:00+00:00", "T00000001"]),
        token(["customers", "customer_id", None, "C\x00"]),
        token(["customers", "lifetime_value", "NaN", "C000001"]),
        token(["customers", "lifetime_value", "1e400", "C000001"]),
        token(["customers", "last_order_date", "2024-02-30", "C000001"]),
        token(["customers", "lifetime_value", 12, "C000001"]),
        # Fits Python's Decimal, not PostgreSQL's numeric, nor the numeric(30,2) column.
        token(["customers", "lifetime_value", "1E-999999", "C000001"]),
        token(["customers", "lifetime_value", "0.001", "C000001"]),
        token(["customers", "lifetime_value", "1" + "0" * 28, "C000001"]),
        # A lone surrogate: valid JSON, but no UTF-8 text PostgreSQL could compare with.
        token(["customers", "lifetime_value", "10.00", "\ud800"]),
    ],
)
def test_foreign_or_forged_cursors_are_refused(bad_token: str) -> None:
    with pytest.raises(queries.InvalidCursorError):
        queries.decode_cursor(bad_token, queries.CUSTOMERS, "lifetime_value")


@pytest.mark.parametrize(
    ("listing_name", "sort", "payload"),
    [
        ("customers", "customer_id", ["customers", "customer_id", None, "\ud800"]),
        ("customers", "customer_id", ["customers", "customer_id", "\udfff", "C1"]),
        ("products", "product_id", ["products", "product_id", None, "P\ud800"]),
        ("orders", "transaction_ts", ["orders", "transaction_ts", "2024-01-01T00:00Z", "\ud800"]),
    ],
)
def test_cursors_with_text_postgresql_cannot_hold_are_refused(
    listing_name: str, sort: str, payload: list
) -> None:
    with pytest.raises(queries.InvalidCursorError):
        queries.decode_cursor(token(payload), queries.LISTINGS[listing_name], sort)


def first_page_after(settings: Settings, listing_name: str, sort: str, cursor: str) -> list[str]:
    """The keys of the page ``fetch_page`` returns for ``cursor``."""
    listing = queries.LISTINGS[listing_name]

    async def fetch() -> list[str]:
        conn = await psycopg.AsyncConnection.connect(
            settings.dsn, autocommit=True, row_factory=dict_row
        )
        async with conn:
            page = await queries.fetch_page(
                conn, listing, queries.Filters(), sort=sort, skip=0, limit=5, cursor=cursor
            )
            return [row[listing.key_column] for row in page.items]

    return asyncio.run(fetch())


@pytest.mark.parametrize("value", ["9" * 28 + ".99", "-" + "9" * 28 + ".99", "0.01", "-0", "7"])
def test_money_cursors_at_the_column_bounds_are_accepted(
    loaded_warehouse: Settings, db_cursor, value: str
) -> None:
    # numeric(30,2) holds up to 28 integer digits and 2 decimals: such values must run.
    cursor = token(["customers", "lifetime_value", value, "C000001"])
    db_cursor.execute(
        "select customer_id from business_vault.vw_customer_360"
        " where lifetime_value < %s::numeric or (lifetime_value = %s::numeric"
        " and customer_id > 'C000001') order by lifetime_value desc, customer_id limit 5",
        (value, value),
    )
    expected = [row[0] for row in db_cursor.fetchall()]
    assert first_page_after(loaded_warehouse, "customers", "lifetime_value", cursor) == expected


def test_cursor_round_trip_keeps_the_sort_value() -> None:
    from datetime import date
    from decimal import Decimal

    issued = queries.encode_cursor(queries.CUSTOMERS, "lifetime_value", Decimal("10.50"), "C1")
    assert queries.decode_cursor(issued, queries.CUSTOMERS, "lifetime_value") == (
        Decimal("10.50"),
        "C1",
    )
    issued = queries.encode_cursor(queries.CUSTOMERS, "last_order_date", date(2024, 2, 29), "C2")
    assert queries.decode_cursor(issued, queries.CUSTOMERS, "last_order_date") == (
        date(2024, 2, 29),
        "C2",
    )


def test_search_prefix_escapes_like_wildcards(loaded_warehouse: Settings, db_cursor) -> None:
    filters = queries.customer_filters(None, None, "_")

    async def count() -> int:
        conn = await psycopg.AsyncConnection.connect(
            loaded_warehouse.dsn, autocommit=True, row_factory=dict_row
        )
        async with conn:
            page = await queries.fetch_page(
                conn, queries.CUSTOMERS, filters, sort="customer_id", skip=0, limit=1, cursor=None
            )
            return page.total

    # "_" matches only names or e-mails that really start with an underscore, not every row.
    db_cursor.execute(
        "select count(*) from business_vault.vw_customer_360 where left(full_name, 1) = '_'"
        " or left(last_name, 1) = '_' or left(email, 1) = '_'"
    )
    assert asyncio.run(count()) == db_cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("stored", "search", "matches"),
    [
        ("Łukasz Müller", "łukasz", True),
        ("łukasz müller", "ŁUKASZ MÜ", True),
        ("Jürgen Straße", "JÜRGEN STRASSE", True),
        # Lower-casing would end the prefix in a final sigma; case folding does not.
        ("ΟΔΥΣΣΕΑΣ ΠΑΠΠΑΣ", "Οδυσ", True),
        ("Zoë Åberg", "ZOË Å", True),
        ("Zoë Åberg", "zoe", False),
        ("Łukasz Müller", "l", False),
    ],
)
def test_search_compares_by_unicode_case_folding(
    db_cursor, stored: str, search: str, matches: bool
) -> None:
    filters = queries.customer_filters(None, None, search)
    db_cursor.execute(
        "select count(*) from (values (%s, %s, %s)) as customer(full_name, last_name, email)"
        f" where {' and '.join(filters.conditions)}",
        [stored, "-", "-", *filters.params],
    )
    assert db_cursor.fetchone()[0] == (1 if matches else 0)


def test_search_is_an_index_scan_on_the_prefix_indexes(loaded_warehouse: Settings) -> None:
    filters = queries.customer_filters(None, None, "Łuk")
    statement = queries.count_statement("customers", tuple(filters.conditions))
    with psycopg.connect(loaded_warehouse.dsn, autocommit=True) as conn:
        # With sequential scans priced out, the plan shows whether the indexes can serve the
        # prefix at all, whatever the planner would choose on this data.
        conn.execute("set enable_seqscan = off")
        plan = "\n".join(
            row[0] for row in conn.execute(f"explain {statement}", filters.params, prepare=False)
        )
    for index in (
        "mv_customer_360_name_prefix_idx",
        "mv_customer_360_last_name_prefix_idx",
        "mv_customer_360_email_prefix_idx",
    ):
        assert f"Index Scan on {index}" in plan, plan
    assert "Seq Scan" not in plan, plan
