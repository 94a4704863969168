"""Validation of clickstream events: pure, no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streaming.events import (
    EVENT_TYPES,
    ClickEvent,
    InvalidEvent,
    event_key,
    format_timestamp,
    parse_event,
    parse_timestamp,
)

VALID = {
    "schema_version": 1,
    "event_id": "0b8f5a3e-3c1e-4d6e-9a53-1f2e3d4c5b6a",
    "event_type": "add_to_cart",
    "customer_id": "C000042",
    "product_id": "P00017",
    "session_id": "5d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a",
    "event_ts": "2026-01-31T12:34:56.789Z",
    "quantity": 3,
    "price": 19.99,
}


def encoded(**changes: object) -> bytes:
    event = {**VALID, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not DROP}).encode()


DROP = object()


def test_a_valid_event_keeps_what_the_aggregates_need() -> None:
    event = parse_event(encoded())
    assert event == ClickEvent(
        event_type="add_to_cart",
        customer_id="C000042",
        product_id="P00017",
        event_ts=datetime(2026, 1, 31, 12, 34, 56, 789000, tzinfo=UTC),
        quantity=3,
        amount_cents=3 * 1999,
    )


def test_ids_are_stored_as_the_warehouse_keys_them() -> None:
    # Trimmed and upper-cased, as raw_vault.normalise_key does, so activity joins the profile.
    event = parse_event(encoded(customer_id=" c000042\t", product_id="p00017 "))
    assert (event.customer_id, event.product_id) == ("C000042", "P00017")


def test_events_are_keyed_by_the_customer_id_as_it_is_counted() -> None:
    # One key for every spelling of a customer's id: one partition, so one order of events.
    for spelling in ("C000042", " c000042\t", "\nC000042 "):
        assert event_key({**VALID, "customer_id": spelling}) == b"C000042"
    # No customer, no order to keep: the record is bound for the dead-letter topic.
    assert event_key({**VALID, "customer_id": " \t"}) is None
    assert event_key({k: v for k, v in VALID.items() if k != "customer_id"}) is None


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_is_accepted(event_type: str) -> None:
    assert isinstance(parse_event(encoded(event_type=event_type)), ClickEvent)


def test_events_without_a_product_need_no_product_fields() -> None:
    event = parse_event(
        encoded(event_type="search", product_id=DROP, quantity=DROP, price=DROP, search_query="x")
    )
    assert isinstance(event, ClickEvent)
    assert (event.product_id, event.quantity, event.amount_cents) == (None, 0, 0)


def test_a_product_view_carries_no_amount() -> None:
    event = parse_event(encoded(event_type="product_view", quantity=DROP, price=DROP))
    assert isinstance(event, ClickEvent) and event.amount_cents == 0


def test_offsets_are_converted_to_utc() -> None:
    event = parse_event(encoded(event_ts="2026-01-31T23:59:30+02:00"))
    assert event.event_ts == datetime(2026, 1, 31, 21, 59, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad JSON"),
        (b"", "bad JSON"),
        (b"\xff\xfe\xfa", "bad JSON"),
        (b'{"price": NaN}', "bad JSON"),
        (b'{"price": Infinity}', "bad JSON"),
        (b'{"price": 1e400}', "bad JSON"),
        (b'{"customer_id": "\\ud800"}', "bad JSON"),
        (b"[" * 2000 + b"]" * 2000, "bad JSON"),
        (b"[1, 2]", "bad JSON: expected an object"),
        (b'"text"', "bad JSON: expected an object"),
        (None, "empty record"),
        (b"{" + b" " * 70_000 + b"}", "record of 70002 bytes"),
    ],
)
def test_records_that_are_not_json_objects_are_rejected(raw: bytes | None, reason: str) -> None:
    result = parse_event(raw)
    assert isinstance(result, InvalidEvent)
    assert result.reason.startswith(reason)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"customer_id": DROP}, "missing field: customer_id"),
        ({"customer_id": ""}, "missing field: customer_id"),
        ({"event_id": None}, "missing field: event_id"),
        ({"session_id": DROP}, "missing field: session_id"),
        ({"event_ts": DROP}, "missing field: event_ts"),
        ({"schema_version": DROP}, "missing field: schema_version"),
        ({"schema_version": 2}, "unsupported schema_version"),
        ({"schema_version": True}, "unsupported schema_version"),
        ({"event_type": "teleport"}, "unknown event_type"),
        ({"event_type": ["page_view"]}, "unknown event_type"),
        ({"customer_id": 42}, "customer_id must be a string"),
        ({"customer_id": "C\x00"}, "customer_id must be"),
        ({"customer_id": "C" * 101}, "customer_id must be"),
        ({"customer_id": " \t "}, "customer_id must be"),
        ({"product_id": "  "}, "product_id must be"),
        ({"session_id": 7}, "session_id must be a string"),
        ({"event_id": "not-a-uuid"}, "event_id is not a UUID"),
        ({"event_ts": "yesterday"}, "bad timestamp"),
        ({"event_ts": "2026-01-31T12:34:56"}, "bad timestamp"),
        ({"event_ts": "2026-02-30T00:00:00Z"}, "bad timestamp"),
        ({"event_ts": 1767225600}, "bad timestamp"),
        ({"product_id": DROP}, "missing field: product_id"),
        ({"product_id": ""}, "product_id must be"),
        ({"quantity": DROP}, "missing field: quantity"),
        ({"quantity": 0}, "quantity out of range"),
        ({"quantity": 1.5}, "quantity must be an integer"),
        ({"quantity": True}, "quantity must be an integer"),
        ({"price": DROP}, "bad price"),
        ({"price": -1}, "bad price"),
        ({"price": "19.99"}, "bad price"),
        ({"price": 19.999}, "bad price"),
        ({"price": 1e12}, "bad price"),
        ({"price": 1.7e308}, "bad price"),
        ({"price": 2**63}, "bad price"),
    ],
)
def test_invalid_fields_are_named_in_the_reason(changes: dict, reason: str) -> None:
    result = parse_event(encoded(**changes))
    assert isinstance(result, InvalidEvent), result
    assert result.reason.startswith(reason), result.reason


def test_timestamps_round_trip_through_the_wire_format() -> None:
    moment = datetime(2026, 5, 1, 8, 0, 1, 234000, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-05-01T08:00:01.234Z"
    assert parse_timestamp(format_timestamp(moment)) == moment


@pytest.mark.parametrize("event_ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_timestamps_that_fall_outside_the_calendar_in_utc_are_rejected(event_ts: str) -> None:
    result = parse_event(encoded(event_ts=event_ts))
    assert isinstance(result, InvalidEvent), result
    assert result.reason == (
        f"bad timestamp: event_ts {event_ts!r} is outside the years 1 to 9999 in UTC"
    )


def test_timestamps_at_the_ends_of_the_calendar_are_accepted() -> None:
    first = parse_event(encoded(event_ts="0001-01-01T00:00:00-01:00"))
    last = parse_event(encoded(event_ts="9999-12-31T23:59:59+05:00"))
    assert first.event_ts == datetime(1, 1, 1, 1, tzinfo=UTC)
    assert last.event_ts == datetime(9999, 12, 31, 18, 59, 59, tzinfo=UTC)


# Within the JSON parser's depth limit, deeper than repr() can recurse.
DEEPLY_NESTED = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("schema_version", DEEPLY_NESTED, "unsupported schema_version"),
        ("event_type", DEEPLY_NESTED, "unknown event_type"),
        ("event_id", DEEPLY_NESTED, "event_id is not a UUID"),
        ("event_ts", DEEPLY_NESTED, "bad timestamp"),
        ("quantity", DEEPLY_NESTED, "quantity must be an integer"),
        ("price", DEEPLY_NESTED, "bad price"),
        ("event_type", b'"' + b"x" * 60_000 + b'"', "unknown event_type"),
        ("event_ts", b'"' + b"2" * 60_000 + b'"', "bad timestamp"),
    ],
)
def test_rejected_values_are_quoted_short(field: str, value: bytes, reason: str) -> None:
    raw = encoded(**{field: "<value>"}).replace(b'"<value>"', value)
    result = parse_event(raw)
    assert isinstance(result, InvalidEvent), result
    assert result.reason.startswith(reason), result.reason
    assert len(result.reason) < 200
