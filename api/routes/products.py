"""``/products``: product analytics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import queries
from api.deps import ConnectionDep, Cursor, Limit, Skip, text_query
from api.schemas import ProductPage

router = APIRouter(prefix="/products", tags=["products"])

ProductSort = Literal["revenue", "units_sold", "product_id"]


@router.get("", response_model=ProductPage, summary="List product analytics")
async def list_products(
    conn: ConnectionDep,
    skip: Skip = 0,
    limit: Limit = 100,
    category: Annotated[
        str | None, text_query("Only products of this category.", "Electronics")
    ] = None,
    sort: Annotated[
        ProductSort,
        Query(
            description=(
                "`revenue` or `units_sold` highest first, or `product_id` ascending; "
                "ties by product_id."
            )
        ),
    ] = "revenue",
    cursor: Cursor = None,
) -> dict:
    """Products with units sold, revenue, margin and rank in their category."""
    filters = queries.product_filters(category)
    page = await queries.fetch_page(
        conn, queries.PRODUCTS, filters, sort=sort, skip=skip, limit=limit, cursor=cursor
    )
    return {
        "total": page.total,
        "skip": skip,
        "limit": limit,
        "next_cursor": page.next_cursor,
        "items": page.items,
    }
