"""Aggregation of a batch of events: pure, no broker and no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streaming.aggregate import aggregate
from streaming.events import EVENT_TYPES, ClickEvent

T0 = datetime(2026, 4, 1, 10, 0, 10, tzinfo=UTC)


def click(
    event_type: str,
    seconds: float,
    customer: str = "C1",
    product: str | None = None,
    quantity: int = 0,
    cents: int = 0,
) -> ClickEvent:
    return ClickEvent(
        event_type=event_type,
        customer_id=customer,
        product_id=product,
        event_ts=T0 + timedelta(seconds=seconds),
        quantity=quantity,
        amount_cents=quantity * cents,
    )


def test_an_empty_batch_adds_nothing() -> None:
    result = aggregate([])
    assert (result.event_count, result.metrics, result.customers, result.products) == (
        0,
        {},
        {},
        {},
    )


def test_metrics_are_counted_per_minute_of_event_time_and_type() -> None:
    batch = [
        click("page_view", 0),
        click("page_view", 49.999),  # 10:00:59.999, still the first minute
        click("page_view", 50),  # 10:01:00
        click("add_to_cart", 55, product="P1", quantity=2, cents=250),
        click("add_to_cart", 70, product="P1", quantity=1, cents=1000),
    ]
    result = aggregate(batch)
    minute = T0.replace(second=0)
    next_minute = minute + timedelta(minutes=1)
    assert {key: (m.event_count, m.amount_cents) for key, m in result.metrics.items()} == {
        (minute, "page_view"): (2, 0),
        (next_minute, "page_view"): (1, 0),
        (next_minute, "add_to_cart"): (2, 500 + 1000),
    }
    assert result.event_count == 5


def test_customer_counts_follow_event_types_and_keep_the_time_range() -> None:
    batch = [click(event_type, seconds) for seconds, event_type in enumerate(EVENT_TYPES)]
    batch.insert(0, click("search", 30))  # out of order: the latest event comes first
    result = aggregate(
        [
            event
            if event.event_type not in {"product_view", "add_to_cart", "remove_from_cart"}
            else click(event.event_type, (event.event_ts - T0).seconds, product="P1")
            for event in batch
        ]
    )
    totals = result.customers["C1"]
    assert totals.event_counts == [1, 1, 2, 1, 1, 1, 1]
    assert totals.first_event_ts == T0
    assert totals.last_event_ts == T0 + timedelta(seconds=30)


def test_the_cart_adds_and_removes_and_a_purchase_empties_it() -> None:
    result = aggregate(
        [
            click("add_to_cart", 0, product="P1", quantity=2, cents=500),
            click("remove_from_cart", 1, product="P1", quantity=1, cents=500),
            click("checkout", 2),  # leaves the cart as it is
        ]
    )
    assert result.customers["C1"].cart_cents == 500
    assert result.customers["C1"].last_purchase_ts is None

    result = aggregate(
        [
            click("add_to_cart", 0, product="P1", quantity=2, cents=500),
            click("purchase", 5, product="P1", quantity=2, cents=500),
            click("add_to_cart", 6, product="P2", quantity=1, cents=300),
        ]
    )
    totals = result.customers["C1"]
    # After the purchase the cart holds only what was added since: 3.00, set not added.
    assert (totals.cart_cents, totals.last_purchase_ts) == (300, T0 + timedelta(seconds=5))
    assert totals.purchased_cents == 1000


def test_a_late_purchase_does_not_move_the_latest_purchase_back() -> None:
    result = aggregate(
        [
            click("purchase", 5, product="P1", quantity=1, cents=100),
            click("purchase", 2, product="P1", quantity=1, cents=100),
        ]
    )
    assert result.customers["C1"].last_purchase_ts == T0 + timedelta(seconds=5)


def test_customers_are_kept_apart() -> None:
    result = aggregate(
        [
            click("add_to_cart", 0, customer="C1", product="P1", quantity=1, cents=100),
            click("add_to_cart", 1, customer="C2", product="P1", quantity=1, cents=700),
            click("purchase", 2, customer="C1", product="P1", quantity=1, cents=100),
        ]
    )
    assert result.customers["C1"].cart_cents == 0
    assert result.customers["C2"].cart_cents == 700
    assert result.customers["C2"].last_purchase_ts is None


def test_product_activity_counts_views_carts_and_purchases() -> None:
    result = aggregate(
        [
            click("product_view", 0, product="P1"),
            click("product_view", 1, product="P1"),
            click("add_to_cart", 2, product="P1", quantity=3, cents=199),
            click("remove_from_cart", 3, product="P1", quantity=1, cents=199),
            click("purchase", 4, product="P1", quantity=2, cents=199),
            click("product_view", 9, product="P2"),
            click("page_view", 20),
        ]
    )
    p1 = result.products["P1"]
    assert (p1.views, p1.add_to_carts, p1.remove_from_carts, p1.purchases) == (2, 1, 1, 1)
    assert (p1.units_purchased, p1.purchased_cents) == (2, 398)
    assert p1.last_event_ts == T0 + timedelta(seconds=4)
    assert result.products.keys() == {"P1", "P2"}
