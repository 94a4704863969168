"""``/orders``: orders with their customer and product details."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from api import queries
from api.deps import ID_PATTERN, ConnectionDep, Cursor, Limit, Skip
from api.schemas import OrderPage, OrderStatus

router = APIRouter(prefix="/orders", tags=["orders"])


@router.get("", response_model=OrderPage, summary="List orders")
async def list_orders(
    conn: ConnectionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    date_from: Annotated[
        date | None,
        Query(description="Only orders on or after this UTC day.", examples=["2024-01-01"]),
    ] = None,
    date_to: Annotated[
        date | None,
        Query(description="Only orders on or before this UTC day.", examples=["2024-03-31"]),
    ] = None,
    status_filter: Annotated[
        OrderStatus | None, Query(alias="status", description="Only orders in this status.")
    ] = None,
    customer_id: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            description="Only this customer's orders; the id is compared trimmed and "
            "case-insensitively.",
            examples=["C000001"],
        ),
    ] = None,
    cursor: Cursor = None,
) -> dict:
    """Orders with customer and product details, newest first, with the total matching count.

    Ties on the timestamp are broken by order id (descending), so pages are deterministic.
    """
    if date_from is not None and date_to is not None and date_from > date_to:
        message = f"date_from ({date_from}) is after date_to ({date_to})"
        raise RequestValidationError(
            [{"loc": ("query", "date_from"), "msg": message, "type": "value_error"}]
        )
    filters = queries.order_filters(customer_id, status_filter, date_from, date_to)
    page = await queries.fetch_page(
        conn, queries.ORDERS, filters, sort="transaction_ts", skip=skip, limit=limit, cursor=cursor
    )
    return {
        "total": page.total,
        "skip": skip,
        "limit": limit,
        "next_cursor": page.next_cursor,
        "items": page.items,
    }
