"""Response models, named for what they return, with an example for each field.

Money is a JSON number with two decimals (the views hold numeric(30,2)); dates are ISO 8601
days, timestamps ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The statuses the loader takes (any other is quarantined); segments are free text.
OrderStatus = Literal["completed", "shipped", "pending", "cancelled", "returned"]


class CustomerProfile(BaseModel):
    """A customer's 360 profile: attributes, order statistics and RFM scores."""

    customer_id: str = Field(description="Business key of the customer.", examples=["C000042"])
    first_name: str | None = Field(description="Given name.", examples=["Ada"])
    last_name: str | None = Field(description="Family name.", examples=["Lovelace"])
    full_name: str | None = Field(description="Given and family name.", examples=["Ada Lovelace"])
    email: str | None = Field(description="E-mail address.", examples=["ada.lovelace@example.com"])
    phone: str | None = Field(description="Phone number as supplied.", examples=["+1-555-0142"])
    city: str | None = Field(description="City.", examples=["Austin"])
    state: str | None = Field(description="State or region.", examples=["TX"])
    country: str | None = Field(description="Country.", examples=["USA"])
    signup_date: date | None = Field(
        description="Day the customer signed up.", examples=["2022-03-14"]
    )
    customer_segment: str | None = Field(
        description="Consumer, Corporate, Home Office or Small Business.", examples=["Corporate"]
    )
    record_source: str | None = Field(
        description="Record source of the current attributes, as the source configuration names it"
        " (data/sources.yaml by default).",
        examples=["crm.customers"],
    )
    profile_updated_at: datetime | None = Field(
        description="When the current attributes were loaded.", examples=["2024-05-01T02:00:00Z"]
    )
    order_count: int = Field(description="Orders placed, in any status.", examples=[12])
    lifetime_value: float = Field(
        description="Revenue of orders not cancelled or returned.", examples=[1843.27]
    )
    avg_order_value: float | None = Field(
        description="Lifetime value per revenue-bearing order.", examples=[153.61]
    )
    first_order_date: date | None = Field(
        description="Day of the first order.", examples=["2022-04-02"]
    )
    last_order_date: date | None = Field(
        description="Day of the latest order.", examples=["2024-04-28"]
    )
    favourite_category: str | None = Field(
        description="Category the customer bought most units of, in orders not cancelled or"
        " returned (ties alphabetical).",
        examples=["Electronics"],
    )
    rfm_recency_score: int | None = Field(
        description="Recency quintile, 5 = most recent.", examples=[5]
    )
    rfm_frequency_score: int | None = Field(
        description="Frequency quintile, 5 = most orders.", examples=[4]
    )
    rfm_monetary_score: int | None = Field(
        description="Monetary quintile, 5 = highest value.", examples=[5]
    )
    rfm_segment: str | None = Field(
        description="Segment named from the RFM scores.", examples=["Champions"]
    )


class RealtimeActivity(BaseModel):
    """What the click stream saw of a customer, kept up to date by the streaming consumer."""

    page_views: int = Field(description="Page views.", examples=[37])
    product_views: int = Field(description="Product detail views.", examples=[12])
    searches: int = Field(description="Searches.", examples=[4])
    add_to_carts: int = Field(description="Add-to-cart events.", examples=[3])
    remove_from_carts: int = Field(description="Remove-from-cart events.", examples=[1])
    checkouts: int = Field(description="Checkouts started.", examples=[1])
    purchases: int = Field(description="Purchases.", examples=[1])
    total_events: int = Field(description="All events of the customer.", examples=[59])
    cart_value: float = Field(description="Value now in the cart.", examples=[0.0])
    purchased_value: float = Field(description="Value purchased on the stream.", examples=[129.97])
    first_event_ts: datetime | None = Field(
        description="First event seen.", examples=["2024-05-01T09:12:03Z"]
    )
    last_event_ts: datetime | None = Field(
        description="Latest event seen.", examples=["2024-05-01T09:41:55Z"]
    )
    last_purchase_ts: datetime | None = Field(
        description="Latest purchase seen.", examples=["2024-05-01T09:40:10Z"]
    )
    updated_at: datetime = Field(
        description="When the consumer last updated this row.", examples=["2024-05-01T09:42:00Z"]
    )


class CustomerDetail(CustomerProfile):
    """One customer's 360 profile with their real-time activity from the click stream."""

    realtime_activity: RealtimeActivity | None = Field(
        description="Click-stream activity; null when the stream has not seen the customer."
    )


class OrderDetail(BaseModel):
    """One order line with its customer and product."""

    order_id: str = Field(description="Transaction id.", examples=["T00001234"])
    transaction_ts: datetime = Field(
        description="When the order was placed (UTC).", examples=["2024-04-28T13:05:00Z"]
    )
    order_date: date = Field(description="UTC day of the order.", examples=["2024-04-28"])
    order_status: str = Field(description="Current status.", examples=["completed"])
    payment_method: str | None = Field(description="How it was paid.", examples=["credit_card"])
    quantity: int = Field(description="Units ordered.", examples=[2])
    unit_price: float = Field(description="Price per unit.", examples=[79.99])
    discount: float = Field(description="Discount as a fraction (0-1).", examples=[0.1])
    total_amount: float = Field(
        description="quantity x unit_price x (1 - discount).", examples=[143.98]
    )
    customer_id: str | None = Field(
        description="Customer; null when the order references an unknown customer.",
        examples=["C000042"],
    )
    customer_name: str | None = Field(
        description="Customer's full name.", examples=["Ada Lovelace"]
    )
    customer_email: str | None = Field(
        description="Customer's e-mail.", examples=["ada.lovelace@example.com"]
    )
    customer_city: str | None = Field(description="Customer's city.", examples=["Austin"])
    customer_country: str | None = Field(description="Customer's country.", examples=["USA"])
    customer_segment: str | None = Field(description="Customer's segment.", examples=["Corporate"])
    product_id: str | None = Field(
        description="Product; null when the order references an unknown product.",
        examples=["P00017"],
    )
    product_name: str | None = Field(description="Product name.", examples=["Wireless Mouse"])
    category: str | None = Field(description="Product category.", examples=["Electronics"])
    brand: str | None = Field(description="Product brand.", examples=["Logitech"])


class ProductAnalytics(BaseModel):
    """A product with its sales figures over all loaded orders."""

    product_id: str = Field(description="Business key of the product.", examples=["P00017"])
    product_name: str | None = Field(description="Product name.", examples=["Wireless Mouse"])
    category: str | None = Field(description="Category.", examples=["Electronics"])
    brand: str | None = Field(description="Brand.", examples=["Logitech"])
    unit_price: float | None = Field(description="List price.", examples=[79.99])
    cost: float | None = Field(description="Unit cost.", examples=[41.5])
    units_sold: int = Field(description="Units in revenue-bearing orders.", examples=[312])
    revenue: float = Field(
        description="Revenue of orders not cancelled or returned.", examples=[22457.1]
    )
    margin: float | None = Field(
        description="Revenue minus cost of the units sold.", examples=[9509.1]
    )
    order_count: int = Field(description="Orders containing the product.", examples=[180])
    distinct_customers: int = Field(description="Customers who ordered it.", examples=[164])
    category_rank: int | None = Field(
        description="Rank by revenue within its category.", examples=[3]
    )


class CustomerVersion(BaseModel):
    """One version of a customer's attributes and the period it was current."""

    customer_id: str = Field(description="Business key of the customer.", examples=["C000042"])
    valid_from: datetime = Field(
        description="When this version was loaded.", examples=["2024-05-01T02:00:00Z"]
    )
    valid_to: datetime | None = Field(
        description="When it was superseded; null if current.", examples=[None]
    )
    is_current: bool = Field(description="Whether this is the current version.", examples=[True])
    first_name: str | None = Field(description="Given name.", examples=["Ada"])
    last_name: str | None = Field(description="Family name.", examples=["Lovelace"])
    email: str | None = Field(description="E-mail address.", examples=["ada.lovelace@example.com"])
    phone: str | None = Field(description="Phone number.", examples=["+1-555-0142"])
    city: str | None = Field(description="City.", examples=["Austin"])
    state: str | None = Field(description="State or region.", examples=["TX"])
    country: str | None = Field(description="Country.", examples=["USA"])
    signup_date: date | None = Field(description="Signup day.", examples=["2022-03-14"])
    customer_segment: str | None = Field(description="Segment.", examples=["Corporate"])
    record_source: str | None = Field(
        description="Record source of this version (the source configuration's).",
        examples=["crm.customers"],
    )
    hashdiff: str | None = Field(
        description="Hash of the attribute values.",
        examples=["78c1e0e1-2186-b573-b440-f1747e475ae6"],
    )


class PageInfo(BaseModel):
    """Fields shared by every paginated response."""

    total: int = Field(description="Rows matching the filters, over all pages.", examples=[10000])
    skip: int = Field(
        description="Rows skipped (after the cursor, if one was given).", examples=[0]
    )
    limit: int = Field(description="Most rows this page may hold.", examples=[100])
    next_cursor: str | None = Field(
        description="Pass as `cursor` (same filters and sort) for the next page; null on the last.",
        examples=["WyJjdXN0b21lcnMiLCJjdXN0b21lcl9pZCIsImFzYyIsIkMwMDAxMDAiLCJDMDAwMTAwIl0"],
    )


class CustomerPage(PageInfo):
    """A page of customer 360 profiles."""

    items: list[CustomerProfile] = Field(description="The profiles on this page.")


class OrderPage(PageInfo):
    """A page of orders with their customer and product."""

    items: list[OrderDetail] = Field(description="The orders on this page.")


class ProductPage(PageInfo):
    """A page of product analytics."""

    items: list[ProductAnalytics] = Field(description="The products on this page.")


class CustomerHistory(BaseModel):
    """How a customer's attributes changed over time, oldest version first."""

    customer_id: str = Field(description="Business key of the customer.", examples=["C000042"])
    versions: list[CustomerVersion] = Field(description="Every loaded version, oldest first.")


class MetricWindow(BaseModel):
    """Events of one type in one minute of event time."""

    minute_start: datetime = Field(
        description="Start of the minute (UTC).", examples=["2024-05-01T09:41:00Z"]
    )
    event_type: str = Field(description="Click-stream event type.", examples=["add_to_cart"])
    event_count: int = Field(description="Events of this type in the minute.", examples=[42])
    amount: float = Field(
        description="Quantity x unit price of the priced events (cart and purchase).",
        examples=[1287.4],
    )
    updated_at: datetime = Field(
        description="When the consumer last added to this minute.",
        examples=["2024-05-01T09:42:03Z"],
    )


class RealtimeMetrics(BaseModel):
    """Click-stream aggregates of the last minutes, newest minute first."""

    minutes: int = Field(description="Length of the period covered.", examples=[60])
    available: bool = Field(
        description="False when the streaming tables are not installed.", examples=[True]
    )
    windows: list[MetricWindow] = Field(description="One entry per minute and event type.")


class HealthStatus(BaseModel):
    """Liveness or readiness of the service."""

    status: str = Field(description="`ok`, `ready` or `unavailable`.", examples=["ok"])


class ErrorMessage(BaseModel):
    """The body of every error response: one sentence saying what went wrong."""

    detail: str = Field(description="What went wrong and, where it helps, what to do.")


class FieldError(BaseModel):
    """One invalid request value."""

    location: str = Field(
        description="Where the value was: query, path or header, and its name.",
        examples=["query.limit"],
    )
    message: str = Field(
        description="What is wrong with it.", examples=["Input should be at most 1000"]
    )


class ValidationErrorMessage(ErrorMessage):
    """A 422 body: one summary sentence and each invalid value."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "invalid request: query.limit: Input should be at most 1000",
                    "errors": [
                        {"location": "query.limit", "message": "Input should be at most 1000"}
                    ],
                }
            ]
        }
    )

    errors: list[FieldError] = Field(description="Each invalid value.")
