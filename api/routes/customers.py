"""``/customers``: 360 profiles, one customer's profile, order history and attribute history."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from api import queries
from api.deps import ConnectionDep, Cursor, CustomerIdPath, Limit, Skip, text_query
from api.schemas import (
    CustomerDetail,
    CustomerHistory,
    CustomerPage,
    ErrorMessage,
    OrderPage,
)

router = APIRouter(prefix="/customers", tags=["customers"])

NOT_FOUND = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorMessage, "description": "Unknown customer id."}
}

CustomerSort = Literal["customer_id", "lifetime_value", "last_order_date"]


def _not_found(customer_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"customer {customer_id} not found")


@router.get("", response_model=CustomerPage, summary="List customer 360 profiles")
async def list_customers(
    conn: ConnectionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    country: Annotated[str | None, text_query("Only customers in this country.", "USA")] = None,
    segment: Annotated[
        str | None, text_query("Only customers of this segment (exact value).", "Corporate")
    ] = None,
    search: Annotated[
        str | None,
        text_query("Case-insensitive prefix of the full name, last name or e-mail.", "ada"),
    ] = None,
    sort: Annotated[
        CustomerSort,
        Query(
            description=(
                "`customer_id` ascending, `lifetime_value` highest first or `last_order_date` "
                "most recent first (customers without orders last); ties by customer_id."
            )
        ),
    ] = "customer_id",
    cursor: Cursor = None,
) -> dict:
    """Customer 360 profiles, filtered and sorted, with the total matching count.

    Pages are deterministic: every sort ends with the customer id. Page with `skip`, or with
    the `next_cursor` of the previous page, which stays fast however deep it goes.
    """
    filters = queries.customer_filters(country, segment, search)
    page = await queries.fetch_page(
        conn, queries.CUSTOMERS, filters, sort=sort, skip=skip, limit=limit, cursor=cursor
    )
    return {
        "total": page.total,
        "skip": skip,
        "limit": limit,
        "next_cursor": page.next_cursor,
        "items": page.items,
    }


@router.get(
    "/{customer_id}",
    response_model=CustomerDetail,
    responses=NOT_FOUND,
    summary="Get one customer's 360 profile",
)
async def get_customer(customer_id: CustomerIdPath, conn: ConnectionDep) -> dict:
    """The full 360 profile of one customer, with their real-time click-stream activity."""
    profile = await queries.fetch_customer(conn, customer_id)
    if profile is None:
        raise _not_found(customer_id)
    return profile


@router.get(
    "/{customer_id}/orders",
    response_model=OrderPage,
    responses=NOT_FOUND,
    summary="List one customer's orders",
)
async def list_customer_orders(
    customer_id: CustomerIdPath,
    conn: ConnectionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    """The customer's orders, newest first (ties by order id, descending)."""
    filters = queries.order_filters(customer_id, None, None, None)
    page = await queries.fetch_page(
        conn, queries.ORDERS, filters, sort="transaction_ts", skip=skip, limit=limit, cursor=cursor
    )
    # An empty page is ambiguous; only then is it worth asking whether the customer exists.
    if page.total == 0 and not await queries.customer_exists(conn, customer_id):
        raise _not_found(customer_id)
    return {
        "total": page.total,
        "skip": skip,
        "limit": limit,
        "next_cursor": page.next_cursor,
        "items": page.items,
    }


@router.get(
    "/{customer_id}/history",
    response_model=CustomerHistory,
    responses=NOT_FOUND,
    summary="Get how a customer's attributes changed",
)
async def get_customer_history(customer_id: CustomerIdPath, conn: ConnectionDep) -> dict:
    """Every version of the customer's attributes loaded into the vault, oldest first.

    Each version is valid from its load time until the next version's (`valid_to` null for
    the current one).
    """
    versions = await queries.fetch_customer_history(conn, customer_id)
    if not versions:
        raise _not_found(customer_id)
    # The id as stored, not as given (which may differ in case and surrounding spaces).
    return {"customer_id": versions[0]["customer_id"], "versions": versions}
