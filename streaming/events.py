"""The clickstream event schema and its validation: pure functions, no I/O.

An event is one JSON object per Kafka record, keyed by its ``customer_id`` trimmed and
upper-cased (``event_key``), the form the consumer counts it under::

    {"schema_version": 1, "event_id": "<uuid>", "event_type": "add_to_cart",
     "customer_id": "C000042", "product_id": "P00017", "session_id": "<uuid>",
     "event_ts": "2026-01-31T12:34:56.789Z", "quantity": 2, "price": 19.99}

``product_id``, ``quantity`` and ``price`` (the unit price) are required for the events about
a product in the cart or an order; ``product_view`` needs ``product_id`` only. Other fields
(``search_query``, ``page_url``) are allowed and ignored by the aggregates.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from customer360.sources import MAX_KEY_LENGTH

SCHEMA_VERSION = 1

EVENT_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
)

# Events that refer to one product, and those that also carry a quantity and a unit price.
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
PRODUCT_EVENT_TYPES = frozenset({"product_view", "add_to_cart", "remove_from_cart", "purchase"})
PRICED_EVENT_TYPES = frozenset({"add_to_cart", "remove_from_cart", "purchase"})

REQUIRED_FIELDS = (
    "schema_version",
    "event_id",
    "event_type",
    "customer_id",
    "session_id",
    "event_ts",
)

# A single record larger than this is not a click; refuse it rather than parse it.
MAX_EVENT_BYTES = 64 * 1024
MAX_QUANTITY = 10_000
_UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
IDENTIFIER_RULE = f"a string of 1 to {MAX_KEY_LENGTH} characters without NUL, not blank"
MAX_PRICE_CENTS = 100_000_000

# Reasons quote the offending value, shortened: it may be 64 KB long, or nested deeper than
# repr() can recurse.
_quote = reprlib.Repr()
_quote.maxlevel = 2
_quote.maxstring = 60
_quote.maxother = 60


class ClickEvent(NamedTuple):
    """A validated event, reduced to what the aggregates need.

    ``amount_cents`` is quantity × unit price in cents for priced events, otherwise 0;
    money is kept in integer cents so that sums are exact.
    """

    event_type: str
    customer_id: str
    product_id: str | None
    event_ts: datetime
    quantity: int
    amount_cents: int


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """Why a record was rejected; the consumer sends it to the dead-letter queue."""

    reason: str


def parse_event(raw: bytes | None) -> ClickEvent | InvalidEvent:
    """Decode and validate one record value; never raises for bad input."""
    if raw is None:
        return InvalidEvent("empty record (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        return InvalidEvent(f"record of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        payload = orjson.loads(raw)
    # orjson: strict RFC 8259 (no NaN), several times faster than the json module here.
    except orjson.JSONDecodeError as exc:
        return InvalidEvent(f"bad JSON: {exc}")
    if not isinstance(payload, dict):
        return InvalidEvent(f"bad JSON: expected an object, got {type(payload).__name__}")
    return validate_event(payload)


def validate_event(payload: dict) -> ClickEvent | InvalidEvent:
    """Check one decoded event against the schema; the first problem found is the reason."""
    # Written for speed: this runs once per record on the consumer's hot path.
    get = payload.get
    for field in REQUIRED_FIELDS:
        value = get(field)
        if value is None or value == "":
            return InvalidEvent(f"missing field: {field}")

    version = payload["schema_version"]
    if version != SCHEMA_VERSION or version is True:
        return InvalidEvent(f"unsupported schema_version: {_quote.repr(version)}")

    event_type = payload["event_type"]
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPE_SET:
        return InvalidEvent(f"unknown event_type: {_quote.repr(event_type)}")

    customer_id = business_key(payload["customer_id"])
    if customer_id is None:
        return InvalidEvent(f"customer_id must be {IDENTIFIER_RULE}")
    if not _is_identifier(payload["session_id"]):
        return InvalidEvent(f"session_id must be {IDENTIFIER_RULE}")
    if not _is_uuid(payload["event_id"]):
        return InvalidEvent(f"event_id is not a UUID: {_quote.repr(payload['event_id'])}")

    event_ts = _utc_timestamp(payload["event_ts"])
    if type(event_ts) is str:
        return InvalidEvent(
            f"bad timestamp: event_ts {_quote.repr(payload['event_ts'])} {event_ts}"
        )

    product_id = get("product_id")
    if product_id is not None:
        product_id = business_key(product_id)
        if product_id is None:
            return InvalidEvent(f"product_id must be {IDENTIFIER_RULE}")
    if product_id is None and event_type in PRODUCT_EVENT_TYPES:
        return InvalidEvent(f"missing field: product_id (required for {event_type})")

    quantity = 0
    amount_cents = 0
    if event_type in PRICED_EVENT_TYPES:
        quantity = get("quantity")
        if quantity is None:
            return InvalidEvent(f"missing field: quantity (required for {event_type})")
        if type(quantity) is not int:
            return InvalidEvent(f"quantity must be an integer: {_quote.repr(quantity)}")
        if not 0 < quantity <= MAX_QUANTITY:
            return InvalidEvent(f"quantity out of range 1..{MAX_QUANTITY}: {quantity}")
        price_cents = _price_cents(get("price"))
        if price_cents is None:
            return InvalidEvent(f"bad price: {_quote.repr(get('price'))}")
        amount_cents = quantity * price_cents

    return ClickEvent(event_type, customer_id, product_id, event_ts, quantity, amount_cents)


def parse_timestamp(value: object) -> datetime | None:
    """An ISO-8601 timestamp with an explicit offset, as an aware UTC datetime; else None."""
    parsed = _utc_timestamp(value)
    return parsed if isinstance(parsed, datetime) else None


def _utc_timestamp(value: object) -> datetime | str:
    """The timestamp in UTC, or what is wrong with it."""
    if not isinstance(value, str) or len(value) > 40:
        return "is not a valid ISO-8601 timestamp"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "is not a valid ISO-8601 timestamp"
    # A timestamp without an offset is ambiguous: which minute it counts in would be a guess.
    if parsed.tzinfo is None:
        return "has no UTC offset"
    if parsed.tzinfo is UTC:
        return parsed
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # An offset can move a time near either end of the calendar past what datetime holds.
        return "is outside the years 1 to 9999 in UTC"


def format_timestamp(moment: datetime) -> str:
    """The wire format of ``event_ts``: UTC, millisecond precision, ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _price_cents(value: object) -> int | None:
    """A non-negative unit price with at most two decimals, in cents."""
    # The range first: a huge float times 100 is infinity, which round() refuses (NaN fails too).
    if type(value) not in (int, float) or not 0 <= value <= MAX_PRICE_CENTS / 100:
        return None
    cents = round(value * 100)
    # Reject prices with more than two decimals rather than silently rounding money.
    if abs(value * 100 - cents) > 1e-6:
        return None
    return cents


def _is_identifier(value: object) -> bool:
    # PostgreSQL text cannot hold NUL; refusing it here keeps one bad record from failing a batch.
    return isinstance(value, str) and 0 < len(value) <= MAX_KEY_LENGTH and "\x00" not in value


def business_key(value: object) -> str | None:
    """A customer or product id as the warehouse stores it (raw_vault.normalise_key: trimmed,
    upper-case), so that activity joins the customer's profile; None if it is no identifier."""
    if not _is_identifier(value):
        return None
    return value.strip(" \t\r\n").upper() or None


def event_key(event: dict) -> bytes | None:
    """The Kafka key of an event: its customer id as the consumer counts it.

    ``c000042`` and ``C000042`` are one customer, so they must share a partition for that
    customer's events to apply in the order they were sent. None when the event names no valid
    customer: it goes to the dead-letter topic, and there is no order to keep.
    """
    customer_id = business_key(event.get("customer_id"))
    return None if customer_id is None else customer_id.encode()


def _is_uuid(value: object) -> bool:
    # A pattern rather than uuid.UUID(): same verdict for the canonical form, several times faster.
    return isinstance(value, str) and _UUID_PATTERN.fullmatch(value) is not None
