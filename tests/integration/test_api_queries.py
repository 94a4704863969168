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


def test_the_order_listing_has_ties_and_the_customer_listing_nulls(db_cursor) -> None:
    # The walks above prove something only if the data has ties and nulls to cut through.
    db_cursor.execute(
        "select count(*) - count(distinct lifetime_value),"
        " count(*) filter (where last_order_date is null)"
        " from business_vault.vw_customer_360"
    )
    value_ties, null_dates = db_cursor.fetchone()
    assert value_ties > 0 and null_dates > 0


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
    ],
)
def test_foreign_or_forged_cursors_are_refused(bad_token: str) -> None:
    with pytest.raises(queries.InvalidCursorError):
        queries.decode_cursor(bad_token, queries.CUSTOMERS, "lifetime_value")


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
