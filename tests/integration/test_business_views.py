"""The business views return what the CSV files say, computed independently in the test."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.expected import (
    GHOST_ID,
    customer_metrics,
    expected_warehouse,
    normalise,
    product_metrics,
)


@pytest.fixture(scope="module")
def expected(demo_data_dir):
    return expected_warehouse(demo_data_dir)


def rows_by_key(cursor, sql: str) -> dict[str, dict]:
    cursor.execute(sql)
    names = [column.name for column in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def test_customer_360_profiles_and_metrics(loaded_warehouse, db_cursor, expected):
    metrics = customer_metrics(expected)
    profiles = rows_by_key(db_cursor, "select * from business_vault.vw_customer_360")

    assert set(profiles) == set(expected.customers)
    for key, row in expected.customers.items():
        profile, m = profiles[key], metrics[key]
        assert profile["email"] == row["email"].strip()
        assert profile["city"] == row["city"].strip()
        assert profile["full_name"] == f"{row['first_name'].strip()} {row['last_name'].strip()}"
        assert profile["order_count"] == m["order_count"], key
        assert profile["lifetime_value"] == m["lifetime_value"], key
        assert profile["avg_order_value"] == m["avg_order_value"], key
        assert profile["first_order_date"] == m["first"], key
        assert profile["last_order_date"] == m["last"], key
        assert profile["favourite_category"] == m["favourite_category"], key
        scores = (
            profile["rfm_recency_score"],
            profile["rfm_frequency_score"],
            profile["rfm_monetary_score"],
            profile["rfm_segment"],
        )
        assert scores == m["rfm"], key


def test_product_analytics(loaded_warehouse, db_cursor, expected):
    metrics = product_metrics(expected)
    products = rows_by_key(db_cursor, "select * from business_vault.vw_product_analytics")

    assert set(products) == set(expected.products)
    for key, m in metrics.items():
        row = products[key]
        assert row["units_sold"] == m["units_sold"], key
        assert row["revenue"] == m["revenue"], key
        assert row["margin"] == m["margin"], key
        assert row["order_count"] == m["order_count"], key
        assert row["distinct_customers"] == m["distinct_customers"], key
        assert row["category_rank"] == m["category_rank"], key


def test_order_analytics_has_every_order_with_its_customer_and_product(
    loaded_warehouse, db_cursor, expected
):
    orders = rows_by_key(db_cursor, "select * from business_vault.vw_order_analytics")

    assert set(orders) == set(expected.orders)
    total = sum((o["total"] for o in expected.orders.values()), Decimal("0"))
    assert sum((o["total_amount"] for o in orders.values()), Decimal("0")) == total
    for key, order in expected.orders.items():
        row = orders[key]
        assert row["order_status"] == order["order_status"]
        assert row["quantity"] == order["quantity_int"]
        if order["customer_key"] == GHOST_ID:
            assert row["customer_id"] is None
        else:
            customer = expected.customers[order["customer_key"]]
            assert row["customer_id"] == order["customer_key"]
            assert row["customer_email"] == customer["email"].strip()
        if order["product_key"] != GHOST_ID:
            assert row["category"] == expected.products[order["product_key"]]["category"]


def test_customer_history_has_one_current_row_per_customer(loaded_warehouse, db_cursor, expected):
    db_cursor.execute(
        "select customer_id, count(*), count(*) filter (where is_current)"
        " from business_vault.vw_customer_history group by customer_id"
    )
    history = {key: (versions, current) for key, versions, current in db_cursor.fetchall()}
    assert set(history) == set(expected.customers)
    assert set(history.values()) == {(1, 1)}
    assert normalise(next(iter(expected.customers))) in history
