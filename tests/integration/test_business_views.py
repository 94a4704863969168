"""The business views return what the CSV files say, computed independently in the test."""

from __future__ import annotations

import pytest

from tests.expected import (
    assert_customer_360_matches,
    assert_order_analytics_matches,
    assert_product_analytics_matches,
    expected_warehouse,
    normalise,
)


@pytest.fixture(scope="module")
def expected(demo_data_dir):
    return expected_warehouse(demo_data_dir)


def test_customer_360_profiles_and_metrics(loaded_warehouse, db_cursor, expected):
    assert_customer_360_matches(db_cursor, expected)


def test_product_analytics(loaded_warehouse, db_cursor, expected):
    assert_product_analytics_matches(db_cursor, expected)


def test_order_analytics_has_every_order_with_its_customer_and_product(
    loaded_warehouse, db_cursor, expected
):
    assert_order_analytics_matches(db_cursor, expected)


def test_customer_history_has_one_current_row_per_customer(loaded_warehouse, db_cursor, expected):
    db_cursor.execute(
        "select customer_id, count(*), count(*) filter (where is_current)"
        " from business_vault.vw_customer_history group by customer_id"
    )
    history = {key: (versions, current) for key, versions, current in db_cursor.fetchall()}
    assert set(history) == set(expected.customers)
    assert set(history.values()) == {(1, 1)}
    assert normalise(next(iter(expected.customers))) in history
