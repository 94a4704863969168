"""Read-only queries over the real-time clickstream tables, for the API.

The streaming consumer (``streaming/``) keeps ``public.customer_activity`` and
``public.real_time_metrics`` up to date; these functions read them with parameterised SQL and
return plain JSON-ready values (money as strings with two decimals, times as ISO-8601).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

# The per-type counters of a customer, in the order events flow through a shop.
ACTIVITY_COUNTERS = (
    "page_views",
    "product_views",
    "searches",
    "add_to_carts",
    "remove_from_carts",
    "checkouts",
    "purchases",
)

MAX_METRIC_MINUTES = 24 * 60


def customer_activity(conn_or_cursor: Any, customer_id: str) -> dict | None:
    """The customer's real-time activity, or None when the stream has not seen them.

    ``customer_id`` is compared as the warehouse keys customers (trimmed, upper-cased), so
    ``c000042`` finds ``C000042``, the id the result carries. Accepts a psycopg2 connection or
    cursor (or a psycopg 3 one). The result holds the counts by event type, ``total_events``,
    ``cart_value`` and ``purchased_value`` (strings, two decimals), and ``first_event_ts``,
    ``last_event_ts``, ``last_purchase_ts``, ``updated_at`` (ISO-8601 or None).
    """
    columns = (
        "customer_id",
        *ACTIVITY_COUNTERS,
        "total_events",
        "cart_value",
        "purchased_value",
        "first_event_ts",
        "last_event_ts",
        "last_purchase_ts",
        "updated_at",
    )
    rows = _fetch(
        conn_or_cursor,
        f"""
        select {", ".join(columns)}
        from public.customer_activity
        where customer_id = raw_vault.normalise_key(%s)
        """,
        (customer_id,),
    )
    if not rows:
        return None
    activity = dict(zip(columns, rows[0], strict=True))
    return {
        "customer_id": activity["customer_id"],
        "events_by_type": {name: int(activity[name]) for name in ACTIVITY_COUNTERS},
        "total_events": int(activity["total_events"]),
        "cart_value": _money(activity["cart_value"]),
        "purchased_value": _money(activity["purchased_value"]),
        "first_event_ts": _iso(activity["first_event_ts"]),
        "last_event_ts": _iso(activity["last_event_ts"]),
        "last_purchase_ts": _iso(activity["last_purchase_ts"]),
        "updated_at": _iso(activity["updated_at"]),
    }


# The minutes of the last ``%s`` up to now (a minute that has not begun is not listed),
# newest first; the API reads the same.
RECENT_METRICS = """
select minute_start, event_type, event_count, amount, updated_at
from public.real_time_metrics
where minute_start >= now() - make_interval(mins => %s) and minute_start <= now()
order by minute_start desc, event_type
"""


def recent_metrics(conn_or_cursor: Any, minutes: int = 60) -> list[dict]:
    """Per-minute, per-event-type counts whose event time lies in the last ``minutes`` minutes.

    Newest minute first, then by event type; ``amount`` is quantity × unit price of the
    priced events (add_to_cart, remove_from_cart, purchase), as a string with two decimals.
    """
    minutes = max(1, min(int(minutes), MAX_METRIC_MINUTES))
    rows = _fetch(conn_or_cursor, RECENT_METRICS, (minutes,))
    return [
        {
            "minute_start": _iso(minute),
            "event_type": event_type,
            "event_count": int(count),
            "amount": _money(amount),
            "updated_at": _iso(updated_at),
        }
        for minute, event_type, count, amount, updated_at in rows
    ]


def _fetch(conn_or_cursor: Any, sql: str, params: tuple) -> list[tuple]:
    """Rows as tuples in select order, whatever the caller's row factory (tuples or dicts)."""
    if hasattr(conn_or_cursor, "execute") and hasattr(conn_or_cursor, "fetchall"):
        conn_or_cursor.execute(sql, params)
        rows = conn_or_cursor.fetchall()
    else:
        with conn_or_cursor.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    return [tuple(row.values()) if isinstance(row, Mapping) else tuple(row) for row in rows]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{Decimal(value):.2f}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
