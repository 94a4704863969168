"""Every SQL statement the API runs: parameterised reads of the business views only.

Values always travel as bind parameters; the only SQL text assembled at run time is
chosen from the fixed column lists below (sort keys, filter fragments), never from input.

List endpoints order by a sort column plus the business key as tie-breaker, so pages are
deterministic, and accept a keyset cursor (the last row's sort key) as well as skip/limit:
a cursor page is an index range scan however deep it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from customer360.realtime import RECENT_METRICS

CUSTOMER_COLUMNS = (
    "customer_id", "first_name", "last_name", "full_name", "email", "phone", "city", "state",
    "country", "signup_date", "customer_segment", "record_source", "profile_updated_at",
    "order_count", "lifetime_value", "avg_order_value", "first_order_date", "last_order_date",
    "favourite_category", "rfm_recency_score", "rfm_frequency_score", "rfm_monetary_score",
    "rfm_segment",
)  # fmt: skip

ORDER_COLUMNS = (
    "order_id", "transaction_ts", "order_date", "order_status", "payment_method", "quantity",
    "unit_price", "discount", "total_amount", "customer_id", "customer_name", "customer_email",
    "customer_city", "customer_country", "customer_segment", "product_id", "product_name",
    "category", "brand",
)  # fmt: skip

PRODUCT_COLUMNS = (
    "product_id", "product_name", "category", "brand", "unit_price", "cost", "units_sold",
    "revenue", "margin", "order_count", "distinct_customers", "category_rank",
)  # fmt: skip

HISTORY_COLUMNS = (
    "customer_id", "valid_from", "valid_to", "is_current", "first_name", "last_name", "email",
    "phone", "city", "state", "country", "signup_date", "customer_segment", "record_source",
    "hashdiff",
)  # fmt: skip


# The type of the money sort columns (lifetime_value, revenue) in the business views.
MONEY_SQL_TYPE = "numeric(30,2)"
NUMERIC_SQL_TYPE = re.compile(r"numeric\((\d+),(\d+)\)")


class InvalidCursorError(ValueError):
    """A pagination cursor that was not issued for this listing and sort."""


@dataclass(frozen=True)
class SortKey:
    """An order a listing may be read in: a column and its direction, then the business key.

    The directions follow the indexes of the business views, so every page is an index scan.
    Nulls in the sort column come last.
    """

    column: str
    sql_type: str
    descending: bool
    key_descending: bool
    nullable: bool = False


@dataclass(frozen=True)
class Listing:
    """One paginated view: its relation, columns, business key and allowed sort keys."""

    name: str
    relation: tuple[str, str]
    columns: tuple[str, ...]
    key_column: str
    sort_keys: dict[str, SortKey]


CUSTOMERS = Listing(
    name="customers",
    relation=("business_vault", "vw_customer_360"),
    columns=CUSTOMER_COLUMNS,
    key_column="customer_id",
    sort_keys={
        "customer_id": SortKey("customer_id", "text", descending=False, key_descending=False),
        "lifetime_value": SortKey(
            "lifetime_value", MONEY_SQL_TYPE, descending=True, key_descending=False
        ),
        "last_order_date": SortKey(
            "last_order_date", "date", descending=True, key_descending=False, nullable=True
        ),
    },
)

ORDERS = Listing(
    name="orders",
    relation=("business_vault", "vw_order_analytics"),
    columns=ORDER_COLUMNS,
    key_column="order_id",
    sort_keys={
        "transaction_ts": SortKey(
            "transaction_ts", "timestamptz", descending=True, key_descending=True
        ),
    },
)

PRODUCTS = Listing(
    name="products",
    relation=("business_vault", "vw_product_analytics"),
    columns=PRODUCT_COLUMNS,
    key_column="product_id",
    sort_keys={
        "revenue": SortKey("revenue", MONEY_SQL_TYPE, descending=True, key_descending=False),
        "units_sold": SortKey("units_sold", "bigint", descending=True, key_descending=False),
        "product_id": SortKey("product_id", "text", descending=False, key_descending=False),
    },
)


@dataclass
class Filters:
    """Conditions ANDed into a listing's WHERE clause, each a fixed fragment plus its values."""

    conditions: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    # Statements whose best plan depends on the values (LIKE prefixes) are planned per call.
    plan_per_call: bool = False

    def add(self, fragment: str, *values: Any) -> None:
        """Add one condition; ``fragment`` is a constant with a %s per value."""
        self.conditions.append(fragment)
        self.params.extend(values)


@dataclass(frozen=True)
class Page:
    """One page of rows, the number of rows matching the filters, and the next page's cursor."""

    total: int
    items: list[dict[str, Any]]
    next_cursor: str | None


ACTIVITY_COLUMNS = (
    "page_views", "product_views", "searches", "add_to_carts", "remove_from_carts", "checkouts",
    "purchases", "total_events", "cart_value", "purchased_value", "first_event_ts",
    "last_event_ts", "last_purchase_ts", "updated_at",
)  # fmt: skip

# Business ids are looked up in the form the warehouse stores them (trimmed, upper-case):
# the warehouse's own function normalises the parameter, so both share one definition. It is
# immutable and inlined, so the lookup stays an index scan on the stored key.
NORMALISED_KEY = "raw_vault.normalise_key(%s)"

# Statements are plain constant text, so psycopg prepares each once per connection.
CUSTOMER_BY_ID = (
    f"select {', '.join(CUSTOMER_COLUMNS)} from business_vault.vw_customer_360"
    f" where customer_id = {NORMALISED_KEY}"
)
# The profile and the click-stream activity in one round trip: this is the hottest endpoint.
CUSTOMER_WITH_ACTIVITY = (
    "select "
    + ", ".join(f"profile.{column}" for column in CUSTOMER_COLUMNS)
    + ", activity.customer_id is not null as has_activity, "
    + ", ".join(f"activity.{column} as activity_{column}" for column in ACTIVITY_COLUMNS)
    + " from business_vault.vw_customer_360 as profile"
    " left join public.customer_activity as activity using (customer_id)"
    f" where profile.customer_id = {NORMALISED_KEY}"
)
CUSTOMER_EXISTS = (
    f"select 1 from business_vault.vw_customer_360 where customer_id = {NORMALISED_KEY}"
)
# hashdiff is a uuid in the vault; the API shows it as its canonical text.
CUSTOMER_HISTORY = (
    f"select {', '.join(HISTORY_COLUMNS).replace('hashdiff', 'hashdiff::text as hashdiff')}"
    " from business_vault.vw_customer_history"
    f" where customer_id = {NORMALISED_KEY} order by valid_from, hashdiff"
)
DATABASE_PING = "select 1"


async def fetch_customer(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    """The 360 profile of one customer with ``realtime_activity``; None if the id is unknown.

    ``realtime_activity`` is None when the stream never saw the customer, or when the
    streaming tables are not installed.
    """
    try:
        cursor = await conn.execute(CUSTOMER_WITH_ACTIVITY, (customer_id,))
    except UndefinedTable:
        cursor = await conn.execute(CUSTOMER_BY_ID, (customer_id,))
        profile = await cursor.fetchone()
        if profile is not None:
            profile["realtime_activity"] = None
        return profile
    row = await cursor.fetchone()
    if row is None:
        return None
    activity = {column: row.pop(f"activity_{column}") for column in ACTIVITY_COLUMNS}
    row["realtime_activity"] = activity if row.pop("has_activity") else None
    return row


async def customer_exists(conn: AsyncConnection, customer_id: str) -> bool:
    """Whether the business views know this customer id."""
    cursor = await conn.execute(CUSTOMER_EXISTS, (customer_id,))
    return await cursor.fetchone() is not None


async def fetch_customer_history(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    """Every version of the customer's attributes, oldest first."""
    cursor = await conn.execute(CUSTOMER_HISTORY, (customer_id,))
    return await cursor.fetchall()


async def ping(conn: AsyncConnection) -> None:
    """A round trip to the database, for the readiness probe."""
    await conn.execute(DATABASE_PING)


def customer_filters(country: str | None, segment: str | None, search: str | None) -> Filters:
    """WHERE conditions of the customer listing."""
    filters = Filters()
    if country is not None:
        filters.add("country = %s", country)
    if segment is not None:
        filters.add("customer_segment = %s", segment)
    if search is not None:
        # Unicode case folding (the database's own C collation folds ASCII only); unlike
        # lower(), it maps each character alone, so a folded prefix stays a prefix. Matches
        # the casefold(...) text_pattern_ops indexes of the 360 view; full_name covers the
        # first name, since it starts with it. Planned per call, so that the planner sees the
        # prefix and uses those indexes.
        prefix = _like_prefix(search)
        filters.add(
            f"({_folded('full_name')} like {_folded('%s')}"
            f" or {_folded('last_name')} like {_folded('%s')}"
            f" or {_folded('email')} like {_folded('%s')})",
            prefix, prefix, prefix,
        )  # fmt: skip
        filters.plan_per_call = True
    return filters


def order_filters(
    customer_id: str | None,
    status: str | None,
    date_from: date | None,
    date_to: date | None,
) -> Filters:
    """WHERE conditions of the order listing; the date range is inclusive, in UTC days."""
    filters = Filters()
    if customer_id is not None:
        filters.add(f"customer_id = {NORMALISED_KEY}", customer_id)
    if status is not None:
        filters.add("order_status = %s", status)
    # Bounds on transaction_ts itself keep the (transaction_ts) index usable.
    if date_from is not None:
        filters.add("transaction_ts >= %s::date::timestamptz", date_from)
    if date_to is not None:
        filters.add("transaction_ts < (%s::date + 1)::timestamptz", date_to)
    return filters


def product_filters(category: str | None) -> Filters:
    """WHERE conditions of the product listing."""
    filters = Filters()
    if category is not None:
        filters.add("category = %s", category)
    return filters


async def fetch_page(
    conn: AsyncConnection,
    listing: Listing,
    filters: Filters,
    *,
    sort: str,
    skip: int,
    limit: int,
    cursor: str | None,
) -> Page:
    """One page of a listing: total matching rows, up to ``limit`` rows and the next cursor.

    The cursor, when given, starts the page right after the row it was issued for; ``skip``
    then counts from there.
    """
    sort_key = listing.sort_keys[sort]
    conditions = tuple(filters.conditions)
    prepare = False if filters.plan_per_call else None
    total_cursor = await conn.execute(
        count_statement(listing.name, conditions), filters.params, prepare=prepare
    )
    total = (await total_cursor.fetchone())["total"]

    params = list(filters.params)
    cursor_kind = None
    if cursor is not None:
        value, key = decode_cursor(cursor, listing, sort)
        cursor_kind = "null" if value is None else "value"
        params.extend(_cursor_params(sort_key, listing.key_column, value, key))
    # One row more than asked tells whether a next page exists.
    params.extend((skip, limit + 1))
    rows_cursor = await conn.execute(
        page_statement(listing.name, sort, conditions, cursor_kind), params, prepare=prepare
    )
    rows = await rows_cursor.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(listing, sort, last[sort_key.column], last[listing.key_column])
    return Page(total=total, items=rows, next_cursor=next_cursor)


LISTINGS = {listing.name: listing for listing in (CUSTOMERS, ORDERS, PRODUCTS)}


@lru_cache(maxsize=256)
def count_statement(listing_name: str, conditions: tuple[str, ...]) -> str:
    listing = LISTINGS[listing_name]
    return f"select count(*) as total from {'.'.join(listing.relation)}{_where(conditions)}"


@lru_cache(maxsize=256)
def page_statement(
    listing_name: str, sort: str, conditions: tuple[str, ...], cursor_kind: str | None
) -> str:
    """The page query's text: every piece is a constant of this module, never input."""
    listing = LISTINGS[listing_name]
    sort_key = listing.sort_keys[sort]
    if cursor_kind is not None:
        conditions = (*conditions, _cursor_condition(sort_key, listing.key_column, cursor_kind))
    return (
        f"select {', '.join(listing.columns)} from {'.'.join(listing.relation)}"
        f"{_where(conditions)} order by {_order_by(sort_key, listing.key_column)}"
        " offset %s limit %s"
    )


def encode_cursor(listing: Listing, sort: str, value: Any, key: str) -> str:
    """An opaque token naming the last row of a page, valid for the same listing and sort."""
    if isinstance(value, date | datetime):
        value = value.isoformat()
    elif isinstance(value, Decimal | int | float):
        value = str(value)
    # As UTF-8, not \u escapes: a key of 100 characters in any script stays within the
    # cursor parameter's length.
    payload = json.dumps(
        [listing.name, sort, value, key], separators=(",", ":"), ensure_ascii=False
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(token: str, listing: Listing, sort: str) -> tuple[Any, str]:
    """The sort value and key a cursor names; InvalidCursorError if it is not for this query."""
    try:
        padded = token + "=" * (-len(token) % 4)
        name, cursor_sort, value, key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
        raise InvalidCursorError("cursor is not a token returned by this API") from exc
    if (name, cursor_sort) != (listing.name, sort):
        raise InvalidCursorError(f"cursor was issued for sort={cursor_sort}, not for sort={sort}")
    if not isinstance(key, str) or not (value is None or isinstance(value, str)):
        raise InvalidCursorError("cursor is not a token returned by this API")
    try:
        _check_storable_text(key)
        if value is None:
            return None, key
        return _parse_sort_value(value, listing.sort_keys[sort].sql_type), key
    except (ValueError, ArithmeticError) as exc:
        raise InvalidCursorError("cursor is not a token returned by this API") from exc


def _check_storable_text(text: str) -> None:
    """ValueError unless PostgreSQL text can hold ``text``: no NUL, and UTF-8 encodable."""
    if "\x00" in text:
        raise ValueError("NUL in text")
    # JSON may carry a lone surrogate ("\ud800"), which no UTF-8 text can hold.
    text.encode("utf-8")


def _parse_sort_value(text: str, sql_type: str) -> Any:
    """The cursor's sort value as the Python type of its column, checked to fit it."""
    if sql_type == "text":
        _check_storable_text(text)
        return text
    if sql_type == "date":
        return date.fromisoformat(text)
    if sql_type == "timestamptz":
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError("timestamp without time zone")
        return parsed
    if sql_type == "bigint":
        number = int(text)
        if not -(2**63) <= number < 2**63:
            raise ValueError("out of range")
        return number
    numeric = NUMERIC_SQL_TYPE.fullmatch(sql_type)
    if numeric is None:
        raise TypeError(f"no cursor parser for sort columns of type {sql_type}")
    precision, scale = int(numeric[1]), int(numeric[2])
    number = Decimal(text)
    # The column's own bounds: values it could hold, and nothing PostgreSQL's numeric input
    # refuses (such as 1E-999999, which Decimal takes).
    if not number.is_finite() or number.as_tuple().exponent < -scale:
        raise ValueError("more decimals than the column has")
    if number.adjusted() >= precision - scale:
        raise ValueError("out of range")
    return number


def _order_by(sort_key: SortKey, key_column: str) -> str:
    key_order = f"{key_column} {'desc' if sort_key.key_descending else 'asc'}"
    if sort_key.column == key_column:
        return key_order
    direction = "desc" if sort_key.descending else "asc"
    # Only nullable columns name their null placement: their indexes say nulls last, while
    # the others' plain desc/asc indexes match the default.
    nulls = " nulls last" if sort_key.nullable else ""
    return f"{sort_key.column} {direction}{nulls}, {key_order}"


def _cursor_condition(sort_key: SortKey, key_column: str, cursor_kind: str) -> str:
    """The condition selecting the rows that follow the cursor's row in the listing's order.

    ``cursor_kind`` is "value" or "null" (the cursor's row had no sort value); the matching
    parameters come from ``_cursor_params``.
    """
    key_after = "<" if sort_key.key_descending else ">"
    if sort_key.column == key_column:
        return f"{key_column} {key_after} %s"
    column = sort_key.column
    if cursor_kind == "null":
        # Nulls come last, so only further nulls follow a null, ordered by the key.
        return f"({column} is null and {key_column} {key_after} %s)"
    typed = f"%s::{sort_key.sql_type}"
    if sort_key.descending == sort_key.key_descending and not sort_key.nullable:
        # Same direction throughout: a row comparison, which is an index range condition.
        return f"({column}, {key_column}) {key_after} ({typed}, %s)"
    # Mixed directions: the first term bounds the index range, the second breaks ties.
    at_or_after, after = ("<=", "<") if sort_key.descending else (">=", ">")
    condition = (
        f"{column} {at_or_after} {typed}"
        f" and ({column} {after} {typed} or {key_column} {key_after} %s)"
    )
    if sort_key.nullable:
        condition = f"(({condition}) or {column} is null)"
    return f"({condition})"


def _cursor_params(sort_key: SortKey, key_column: str, value: Any, key: str) -> list[Any]:
    """The values for ``_cursor_condition``'s placeholders."""
    if sort_key.column == key_column or value is None:
        return [key]
    if sort_key.descending == sort_key.key_descending and not sort_key.nullable:
        return [value, key]
    return [value, value, key]


def _where(conditions: tuple[str, ...]) -> str:
    return " where " + " and ".join(conditions) if conditions else ""


def _folded(operand: str) -> str:
    """``operand`` case-folded by Unicode rules, as the search prefix indexes hold it."""
    return f"casefold({operand} collate pg_unicode_fast)"


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching values that start with ``text`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def fetch_recent_metrics(conn: AsyncConnection, minutes: int) -> list[dict[str, Any]] | None:
    """Per-minute event counts of the last ``minutes``; None when streaming is not installed."""
    try:
        cursor = await conn.execute(RECENT_METRICS, (minutes,))
    except UndefinedTable:
        return None
    return await cursor.fetchall()
