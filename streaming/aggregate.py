"""Aggregation of a batch of validated events: a pure function, no I/O.

The result of one batch is what the sink adds to the running totals in PostgreSQL. Every
figure is additive across batches (counts and sums), except the cart, whose batch summary
says either "add this amount" or "the cart was emptied, then this amount was added".

Cart value, per customer: ``add_to_cart`` adds quantity × unit price, ``remove_from_cart``
subtracts it, ``purchase`` empties the cart (the order was placed), and ``checkout`` leaves
it unchanged (a checkout page that is abandoned leaves the cart as it was). Events are
applied in the order the customer's partition holds them, which is the order they were sent,
since every event of a customer carries the same key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from streaming.events import EVENT_TYPES, ClickEvent

EVENT_TYPE_INDEX = {event_type: index for index, event_type in enumerate(EVENT_TYPES)}


@dataclass(slots=True)
class MinuteMetric:
    """Events of one type whose event time falls in one minute."""

    event_count: int = 0
    amount_cents: int = 0


@dataclass(slots=True)
class CustomerTotals:
    """One customer's activity within a batch.

    ``event_counts`` follows the order of ``EVENT_TYPES``. When ``last_purchase_ts`` is set (a
    purchase emptied the cart in this batch) ``cart_cents`` is the value afterwards; otherwise
    it is the change to apply to the stored cart.
    """

    event_counts: list[int] = field(default_factory=lambda: [0] * len(EVENT_TYPES))
    first_event_ts: datetime | None = None
    last_event_ts: datetime | None = None
    cart_cents: int = 0
    last_purchase_ts: datetime | None = None
    purchased_cents: int = 0


@dataclass(slots=True)
class ProductTotals:
    """One product's activity within a batch."""

    views: int = 0
    add_to_carts: int = 0
    remove_from_carts: int = 0
    purchases: int = 0
    units_purchased: int = 0
    purchased_cents: int = 0
    last_event_ts: datetime | None = None


@dataclass(slots=True)
class BatchAggregates:
    """Everything one batch adds to the real-time tables."""

    metrics: dict[tuple[datetime, str], MinuteMetric] = field(default_factory=dict)
    customers: dict[str, CustomerTotals] = field(default_factory=dict)
    products: dict[str, ProductTotals] = field(default_factory=dict)
    event_count: int = 0


def aggregate(events: Iterable[ClickEvent]) -> BatchAggregates:
    """Fold a batch of events, in the order given, into per-minute, customer and product totals."""
    result = BatchAggregates()
    metrics = result.metrics
    customers = result.customers
    products = result.products
    count = 0
    for event in events:
        count += 1
        event_type = event.event_type
        event_ts = event.event_ts

        minute_key = (event_ts.replace(second=0, microsecond=0), event_type)
        metric = metrics.get(minute_key)
        if metric is None:
            metric = metrics[minute_key] = MinuteMetric()
        metric.event_count += 1
        metric.amount_cents += event.amount_cents

        customer = customers.get(event.customer_id)
        if customer is None:
            customer = customers[event.customer_id] = CustomerTotals()
        customer.event_counts[EVENT_TYPE_INDEX[event_type]] += 1
        if customer.first_event_ts is None or event_ts < customer.first_event_ts:
            customer.first_event_ts = event_ts
        if customer.last_event_ts is None or event_ts > customer.last_event_ts:
            customer.last_event_ts = event_ts
        if event_type == "add_to_cart":
            customer.cart_cents += event.amount_cents
        elif event_type == "remove_from_cart":
            customer.cart_cents -= event.amount_cents
        elif event_type == "purchase":
            customer.cart_cents = 0
            # The latest purchase by event time: a late one does not move it back.
            if customer.last_purchase_ts is None or event_ts > customer.last_purchase_ts:
                customer.last_purchase_ts = event_ts
            customer.purchased_cents += event.amount_cents

        if event.product_id is not None:
            product = products.get(event.product_id)
            if product is None:
                product = products[event.product_id] = ProductTotals()
            if event_type == "product_view":
                product.views += 1
            elif event_type == "add_to_cart":
                product.add_to_carts += 1
            elif event_type == "remove_from_cart":
                product.remove_from_carts += 1
            elif event_type == "purchase":
                product.purchases += 1
                product.units_purchased += event.quantity
                product.purchased_cents += event.amount_cents
            if product.last_event_ts is None or event_ts > product.last_event_ts:
                product.last_event_ts = event_ts
    result.event_count = count
    return result
