"""The REST API over HTTP: a real uvicorn server on the loaded demo warehouse.

Every expected value comes from SQL written here against the warehouse (or from arithmetic),
not from the API's own query module.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg2
import psycopg2.extras
import pytest
from api_support import TEST_API_KEYS, TEST_JWT_SECRET, running_api

from customer360 import realtime
from customer360.embedded_db import EmbeddedServer
from customer360.migrate import migrate
from customer360.pipeline import run_batch
from customer360.processes import free_port
from customer360.settings import PROJECT_ROOT, Settings
from tests import deliveries

KEY_HEADERS = {"X-API-Key": TEST_API_KEYS[0]}
DATETIME_FIELDS = {
    "minute_start", "profile_updated_at", "transaction_ts", "valid_from", "valid_to",
    "first_event_ts", "last_event_ts", "last_purchase_ts", "updated_at",
}  # fmt: skip


@pytest.fixture(scope="module")
def api_url(loaded_warehouse: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The API in api_key mode on the loaded warehouse."""
    with running_api(loaded_warehouse, tmp_path_factory.mktemp("api-logs"), "main") as url:
        yield url


@pytest.fixture(scope="module")
def client(api_url: str) -> httpx.Client:
    with httpx.Client(base_url=api_url, headers=KEY_HEADERS, timeout=30) as http:
        yield http


@pytest.fixture
def dict_cursor(loaded_warehouse: Settings):
    conn = psycopg2.connect(loaded_warehouse.dsn)
    conn.autocommit = True
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        yield cur
    conn.close()


def query(cur, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
    cur.execute(sql, params)
    return [dict(row) for row in cur.fetchall()]


def as_json_value(name: str, value: Any) -> Any:
    """A SQL value in the form the API's JSON should carry it."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, date):
        return value.isoformat()
    return value


def from_json(name: str, value: Any) -> Any:
    if name in DATETIME_FIELDS and value is not None:
        return datetime.fromisoformat(value).astimezone(UTC)
    return value


def cursor_token(payload: list) -> str:
    """A cursor built by hand, the way the API encodes its own."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def assert_same_record(api_record: dict, sql_record: dict) -> None:
    """Every column of the SQL row appears in the API record with the same value."""
    for name, value in sql_record.items():
        assert from_json(name, api_record[name]) == as_json_value(name, value), name


# Probes, metrics and docs ------------------------------------------------------------------


def test_health_ready_and_docs_need_no_credentials(api_url: str) -> None:
    for path in ("/health", "/ready", "/openapi.json", "/docs", "/redoc", "/metrics"):
        response = httpx.get(api_url + path)
        assert response.status_code == 200, path
    assert httpx.get(api_url + "/health").json() == {"status": "ok"}
    assert httpx.get(api_url + "/ready").json() == {"status": "ready"}


def test_docs_pages_load_their_assets_from_this_server(api_url: str) -> None:
    for page, assets in {
        "/docs": ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"),
        "/redoc": ("/docs-assets/redoc.standalone.js",),
    }.items():
        html = httpx.get(api_url + page).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
        for asset in assets:
            assert asset in html
            response = httpx.get(api_url + asset)
            assert response.status_code == 200 and len(response.content) > 10_000


def test_openapi_documents_every_parameter_and_response(api_url: str) -> None:
    schema = httpx.get(api_url + "/openapi.json").json()
    expected_paths = {
        "/customers", "/customers/{customer_id}", "/customers/{customer_id}/orders",
        "/customers/{customer_id}/history", "/products", "/orders", "/realtime/metrics",
        "/health", "/ready", "/metrics",
    }  # fmt: skip
    assert expected_paths <= set(schema["paths"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description"), f"{method} {path}"
            for parameter in operation.get("parameters", []):
                assert parameter.get("description"), f"{method} {path} {parameter['name']}"
                has_example = "examples" in parameter or "example" in parameter
                has_example = has_example or "examples" in parameter["schema"]
                has_example = has_example or "enum" in parameter["schema"]
                has_example = has_example or any(
                    "enum" in option for option in parameter["schema"].get("anyOf", [])
                )
                assert has_example, f"{method} {path} {parameter['name']}"
            if path not in {"/health", "/ready", "/metrics"}:
                assert {"200", "401", "422", "429", "503"} <= set(operation["responses"])
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader"}


def test_metrics_count_requests_by_route_and_status(client: httpx.Client, api_url: str) -> None:
    def count(text: str, route: str, status: str) -> int:
        prefix = f'c360_api_requests_total{{method="GET",route="{route}",status="{status}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return int(line.removeprefix(prefix))
        return 0

    before = httpx.get(api_url + "/metrics").text
    for _ in range(3):
        assert client.get("/products", params={"limit": 1}).status_code == 200
    assert client.get("/customers/ZZ-NO-SUCH").status_code == 404
    after = httpx.get(api_url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert count(after.text, "/products", "200") - count(before, "/products", "200") == 3
    assert (
        count(after.text, "/customers/{customer_id}", "404")
        - count(before, "/customers/{customer_id}", "404")
        == 1
    )
    assert 'c360_api_request_duration_seconds_bucket{method="GET",route="/products",le="+Inf"}' in (
        after.text
    )


def test_cors_allows_only_the_configured_origins(api_url: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key",
    }
    allowed = httpx.options(
        api_url + "/customers", headers={"Origin": "http://allowed.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    denied = httpx.options(
        api_url + "/customers", headers={"Origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in denied.headers


# Customers -----------------------------------------------------------------------------------


def test_customer_list_matches_the_view_with_total(client: httpx.Client, dict_cursor) -> None:
    expected = query(
        dict_cursor,
        "select * from business_vault.vw_customer_360 order by customer_id limit 25 offset 10",
    )
    total = query(dict_cursor, "select count(*) as n from business_vault.vw_customer_360")[0]["n"]
    page = client.get("/customers", params={"skip": 10, "limit": 25}).json()
    assert page["total"] == total
    assert (page["skip"], page["limit"]) == (10, 25)
    assert len(page["items"]) == 25
    for api_record, sql_record in zip(page["items"], expected, strict=True):
        assert_same_record(api_record, sql_record)


@pytest.mark.parametrize(
    ("sort", "order_by"),
    [
        ("customer_id", "customer_id"),
        ("lifetime_value", "lifetime_value desc, customer_id"),
        ("last_order_date", "last_order_date desc nulls last, customer_id"),
    ],
)
def test_cursor_and_skip_pages_walk_every_customer_once_in_order(
    client: httpx.Client, dict_cursor, sort: str, order_by: str
) -> None:
    expected_ids = [
        row["customer_id"]
        for row in query(
            dict_cursor,
            f"select customer_id from business_vault.vw_customer_360 order by {order_by}",
        )
    ]
    by_cursor: list[str] = []
    cursor = None
    while True:
        params = {"sort": sort, "limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get("/customers", params=params).json()
        assert page["total"] == len(expected_ids)
        by_cursor += [item["customer_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    by_skip: list[str] = []
    for skip in range(0, len(expected_ids), 1000):
        page = client.get("/customers", params={"sort": sort, "limit": 1000, "skip": skip}).json()
        by_skip += [item["customer_id"] for item in page["items"]]
    assert by_cursor == expected_ids
    assert by_skip == expected_ids


def test_customer_filters_match_independent_sql(client: httpx.Client, dict_cursor) -> None:
    country = query(
        dict_cursor,
        "select country from business_vault.vw_customer_360 group by country"
        " order by count(*) desc limit 1",
    )[0]["country"]
    cases = [
        ({"country": country}, "country = %s", [country]),
        ({"segment": "Home Office"}, "customer_segment = %s", ["Home Office"]),
        (
            {"country": country, "segment": "Corporate"},
            "country = %s and customer_segment = %s",
            [country, "Corporate"],
        ),
        (
            {"search": "MA"},
            "(upper(full_name) like 'MA%%' or upper(last_name) like 'MA%%'"
            " or upper(email) like 'MA%%')",
            [],
        ),
    ]
    for params, where, values in cases:
        expected_ids = [
            row["customer_id"]
            for row in query(
                dict_cursor,
                f"select customer_id from business_vault.vw_customer_360 where {where}"
                " order by customer_id",
                values,
            )
        ]
        assert expected_ids, params
        page = client.get("/customers", params={**params, "limit": 1000}).json()
        assert page["total"] == len(expected_ids), params
        assert [item["customer_id"] for item in page["items"]] == expected_ids[:1000], params
    # Segments are the files' free text: one nobody has is no error, and matches nobody.
    nobody = query(
        dict_cursor,
        "select count(*) as n from business_vault.vw_customer_360 where customer_segment = 'Gold'",
    )[0]["n"]
    page = client.get("/customers", params={"segment": "Gold"})
    assert page.status_code == 200 and page.json()["total"] == nobody == 0


def test_search_treats_like_wildcards_literally(client: httpx.Client) -> None:
    page = client.get("/customers", params={"search": "%"}).json()
    assert page["total"] == 0 and page["items"] == []


def test_search_folds_case_beyond_ascii(client: httpx.Client, dict_cursor) -> None:
    customers = query(
        dict_cursor,
        "select customer_id, full_name, last_name, email from business_vault.vw_customer_360",
    )
    # The commonest first name starting with a cased letter outside ASCII (Łukasz, Åsa, ...).
    first_names = [
        row["full_name"].split()[0]
        for row in customers
        if not row["full_name"][0].isascii() and row["full_name"][0].lower() != row["full_name"][0]
    ]
    first_name = max(sorted(set(first_names)), key=first_names.count)
    expected_ids = sorted(
        row["customer_id"]
        for row in customers
        if any(
            row[column].casefold().startswith(first_name.casefold())
            for column in ("full_name", "last_name", "email")
        )
    )
    assert expected_ids
    for search in (first_name, first_name.upper(), first_name.lower()):
        page = client.get("/customers", params={"search": search, "limit": 1000}).json()
        assert page["total"] == len(expected_ids), search
        assert [item["customer_id"] for item in page["items"]] == expected_ids[:1000], search


def test_customer_profile_matches_the_view(client: httpx.Client, dict_cursor) -> None:
    expected = query(
        dict_cursor,
        "select * from business_vault.vw_customer_360 order by order_count desc, customer_id"
        " limit 1",
    )[0]
    response = client.get(f"/customers/{expected['customer_id']}")
    assert response.status_code == 200
    assert_same_record(response.json(), expected)


def test_customer_lifetime_value_equals_its_revenue_orders(
    client: httpx.Client, dict_cursor
) -> None:
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 where order_count > 3"
        " order by customer_id limit 1",
    )[0]["customer_id"]
    orders = query(
        dict_cursor,
        "select total_amount, order_status from business_vault.vw_order_analytics"
        " where customer_id = %s",
        [customer],
    )
    revenue = sum(
        (
            row["total_amount"]
            for row in orders
            if row["order_status"] not in {"cancelled", "returned"}
        ),
        Decimal(0),
    )
    profile = client.get(f"/customers/{customer}").json()
    assert profile["order_count"] == len(orders)
    assert Decimal(str(profile["lifetime_value"])) == revenue


def test_customer_profile_carries_realtime_activity(client: httpx.Client, dict_cursor) -> None:
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 where customer_id not in"
        " (select customer_id from public.customer_activity) order by customer_id desc limit 1",
    )[0]["customer_id"]
    assert client.get(f"/customers/{customer}").json()["realtime_activity"] is None
    seen_at = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    dict_cursor.execute(
        "insert into public.customer_activity (customer_id, page_views, add_to_carts, purchases,"
        " total_events, cart_value, purchased_value, first_event_ts, last_event_ts)"
        " values (%s, 7, 2, 1, 10, 19.99, 45.50, %s, %s)",
        [customer, seen_at - timedelta(minutes=20), seen_at],
    )
    try:
        activity = client.get(f"/customers/{customer}").json()["realtime_activity"]
        # The streaming area's own reader of the same table is the reference.
        reference = realtime.customer_activity(dict_cursor, customer)
    finally:
        dict_cursor.execute(
            "delete from public.customer_activity where customer_id = %s", [customer]
        )
    assert activity["page_views"] == 7 and activity["add_to_carts"] == 2
    assert activity["purchases"] == 1 and activity["total_events"] == 10
    assert activity["cart_value"] == 19.99 and activity["purchased_value"] == 45.5
    assert datetime.fromisoformat(activity["last_event_ts"]) == seen_at
    assert activity["product_views"] == 0 and activity["last_purchase_ts"] is None
    for event_type, count in reference["events_by_type"].items():
        assert activity[event_type] == count, event_type
    for name in ("total_events",):
        assert activity[name] == reference[name]
    for name in ("cart_value", "purchased_value"):
        assert Decimal(str(activity[name])) == Decimal(reference[name]), name
    for name in ("first_event_ts", "last_event_ts", "last_purchase_ts", "updated_at"):
        assert from_json(name, activity[name]) == from_json(name, reference[name]), name


def test_realtime_metrics_match_the_streaming_reader(client: httpx.Client, dict_cursor) -> None:
    dict_cursor.execute(
        "select date_trunc('minute', now()) - interval '7 minutes' as minute_start,"
        " date_trunc('minute', now()) - interval '3 hours' as too_old"
    )
    recent, too_old = dict_cursor.fetchone().values()
    rows = [
        (recent, "api_test_purchase", 3, "120.50"),
        (recent, "api_test_view", 11, "0"),
        (too_old, "api_test_view", 5, "0"),
    ]
    dict_cursor.executemany(
        "insert into public.real_time_metrics (minute_start, event_type, event_count, amount)"
        " values (%s, %s, %s, %s)",
        rows,
    )
    try:
        body = client.get("/realtime/metrics", params={"minutes": 60}).json()
        reference = realtime.recent_metrics(dict_cursor, 60)
    finally:
        dict_cursor.execute(
            "delete from public.real_time_metrics where event_type like 'api_test_%'"
        )
    assert body["available"] is True and body["minutes"] == 60
    ours = [w for w in body["windows"] if w["event_type"].startswith("api_test_")]
    assert [(w["event_type"], w["event_count"], w["amount"]) for w in ours] == [
        ("api_test_purchase", 3, 120.5),
        ("api_test_view", 11, 0.0),
    ]
    assert all(from_json("minute_start", w["minute_start"]) == recent for w in ours)
    assert len(body["windows"]) == len(reference)
    for window, expected in zip(body["windows"], reference, strict=True):
        assert window["event_type"] == expected["event_type"]
        assert window["event_count"] == expected["event_count"]
        assert Decimal(str(window["amount"])) == Decimal(expected["amount"])


def test_unknown_customer_is_404_json(client: httpx.Client) -> None:
    for path in ("/customers/C999999", "/customers/C999999/orders", "/customers/C999999/history"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "customer C999999 not found"}


def test_customer_orders_newest_first_with_total(client: httpx.Client, dict_cursor) -> None:
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 order by order_count desc,"
        " customer_id limit 1",
    )[0]["customer_id"]
    expected = query(
        dict_cursor,
        "select * from business_vault.vw_order_analytics where customer_id = %s"
        " order by transaction_ts desc, order_id desc",
        [customer],
    )
    first = client.get(f"/customers/{customer}/orders", params={"limit": 5}).json()
    assert first["total"] == len(expected)
    for api_record, sql_record in zip(first["items"], expected[:5], strict=True):
        assert_same_record(api_record, sql_record)
    rest = client.get(
        f"/customers/{customer}/orders", params={"limit": 1000, "cursor": first["next_cursor"]}
    ).json()
    assert [order["order_id"] for order in first["items"] + rest["items"]] == [
        row["order_id"] for row in expected
    ]
    assert rest["next_cursor"] is None


def test_customer_history_matches_the_satellite(client: httpx.Client, dict_cursor) -> None:
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 order by customer_id limit 1",
    )[0]["customer_id"]
    expected = query(
        dict_cursor,
        "select hub.customer_id, sat.load_dts, sat.email, sat.city, sat.hashdiff"
        " from raw_vault.sat_customer_details as sat join raw_vault.hub_customer as hub"
        " using (customer_hk) where hub.customer_id = %s order by sat.load_dts",
        [customer],
    )
    history = client.get(f"/customers/{customer}/history").json()
    assert history["customer_id"] == customer
    versions = history["versions"]
    assert [(v["email"], v["city"], v["hashdiff"]) for v in versions] == [
        (row["email"], row["city"], row["hashdiff"]) for row in expected
    ]
    assert [datetime.fromisoformat(v["valid_from"]) for v in versions] == [
        row["load_dts"] for row in expected
    ]
    assert [v["is_current"] for v in versions] == [False] * (len(versions) - 1) + [True]
    assert versions[-1]["valid_to"] is None


def test_ids_match_trimmed_and_case_insensitively(client: httpx.Client, dict_cursor) -> None:
    # A customer with orders and attribute history, so that every lookup has rows to compare.
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360"
        " where order_count > 1 and customer_id <> lower(customer_id)"
        " order by customer_id limit 1",
    )[0]["customer_id"]
    orders = [
        row["order_id"]
        for row in query(
            dict_cursor,
            "select order_id from business_vault.vw_order_analytics where customer_id = %s"
            " order by transaction_ts desc, order_id desc",
            [customer],
        )
    ]

    def bodies(given_id: str) -> dict[str, Any]:
        in_path = urllib.parse.quote(given_id, safe="")
        responses = {
            "profile": client.get(f"/customers/{in_path}"),
            "orders": client.get(f"/customers/{in_path}/orders", params={"limit": 1000}),
            "history": client.get(f"/customers/{in_path}/history"),
            "order filter": client.get("/orders", params={"customer_id": given_id, "limit": 1000}),
        }
        for name, response in responses.items():
            assert response.status_code == 200, (given_id, name, response.text)
        return {name: response.json() for name, response in responses.items()}

    canonical = bodies(customer)
    assert canonical["profile"]["customer_id"] == customer
    assert canonical["history"]["customer_id"] == customer
    for listing in ("orders", "order filter"):
        assert [item["order_id"] for item in canonical[listing]["items"]] == orders
    for given_id in (customer.lower(), f"  {customer.lower()} ", f"\t{customer}\r\n"):
        assert bodies(given_id) == canonical, repr(given_id)


def test_a_users_own_keys_in_any_script_are_served(make_database, tmp_path: Path) -> None:
    # Keys the warehouse takes that are neither ASCII letters nor digits: each is served,
    # in the case the file gives or any other, with its one order.
    # Upper-cased as the warehouse stores keys, 'ﬃ' is 'FFI': 60 of them are stored as 180.
    keys = ["Łódź 7", "a@b.example", "Ωμέγα#1", "K" * 100, "客" * 100, "ﬃ" * 60]
    settings = make_database().model_copy(
        update={"min_customers": 0, "min_products": 0, "min_transactions": 0}
    )
    deliveries.deliver(
        tmp_path / "day1",
        customers=[
            deliveries.customer(key, email=f"c{number}@example.net")
            for number, key in enumerate(keys)
        ],
        transactions=[
            deliveries.order(f"T{number}", customer_id=key) for number, key in enumerate(keys)
        ],
    )
    run_batch(tmp_path / "day1", settings)

    with (
        running_api(settings, tmp_path, "own-keys") as url,
        httpx.Client(base_url=url, headers=KEY_HEADERS, timeout=30) as own_client,
    ):
        for number, key in enumerate(keys):
            for given_id in (key, key.lower(), f" {key.swapcase()}\t", key.upper()):
                in_path = urllib.parse.quote(given_id, safe="")
                profile = own_client.get(f"/customers/{in_path}")
                assert profile.status_code == 200, (given_id, profile.text)
                assert profile.json()["customer_id"] == key.upper()
                orders = own_client.get(f"/customers/{in_path}/orders").json()["items"]
                assert [item["order_id"] for item in orders] == [f"T{number}"]
        too_long = own_client.get(f"/customers/{'K' * 301}")
        assert too_long.status_code == 422
        assert too_long.json()["errors"] == [
            {
                "location": "path.customer_id",
                "message": "should be a business key: 1 to 300 characters once trimmed,"
                " without control characters",
            }
        ]
        # Cursors carry keys in any script, however long: one customer a page, by id.
        walked, cursor = [], None
        while True:
            params = {"sort": "customer_id", "limit": 1} | ({"cursor": cursor} if cursor else {})
            page = own_client.get("/customers", params=params)
            assert page.status_code == 200, page.text
            walked += [item["customer_id"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        # The database's C collation orders by UTF-8 bytes, that is by code point.
        assert walked == sorted(key.upper() for key in keys)


# Products and orders -------------------------------------------------------------------------


def test_products_sorted_by_revenue_and_units(client: httpx.Client, dict_cursor) -> None:
    for sort, order_by in (("revenue", "revenue desc"), ("units_sold", "units_sold desc")):
        expected = query(
            dict_cursor,
            f"select * from business_vault.vw_product_analytics order by {order_by}, product_id"
            " limit 50",
        )
        page = client.get("/products", params={"sort": sort, "limit": 50}).json()
        for api_record, sql_record in zip(page["items"], expected, strict=True):
            assert_same_record(api_record, sql_record)


def test_products_filtered_by_category(client: httpx.Client, dict_cursor) -> None:
    category = query(
        dict_cursor,
        "select category from business_vault.vw_product_analytics where category is not null"
        " order by category limit 1",
    )[0]["category"]
    expected = query(
        dict_cursor,
        "select product_id, revenue from business_vault.vw_product_analytics"
        " where category = %s order by revenue desc, product_id",
        [category],
    )
    page = client.get("/products", params={"category": category, "limit": 1000}).json()
    assert page["total"] == len(expected)
    assert [item["product_id"] for item in page["items"]] == [row["product_id"] for row in expected]


def test_orders_filters_match_independent_sql(client: httpx.Client, dict_cursor) -> None:
    day = query(
        dict_cursor,
        "select (transaction_ts at time zone 'UTC')::date as day"
        " from business_vault.vw_order_analytics group by 1 order by count(*) desc limit 1",
    )[0]["day"]
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 order by order_count desc limit 1",
    )[0]["customer_id"]
    week_end = day + timedelta(days=6)
    cases = [
        ({"status": "returned"}, "order_status = 'returned'", []),
        ({"customer_id": customer}, "customer_id = %s", [customer]),
        (
            {"date_from": day.isoformat(), "date_to": week_end.isoformat()},
            "(transaction_ts at time zone 'UTC')::date between %s and %s",
            [day, week_end],
        ),
        (
            {"date_from": day.isoformat(), "date_to": day.isoformat(), "status": "completed"},
            "(transaction_ts at time zone 'UTC')::date = %s and order_status = 'completed'",
            [day],
        ),
    ]
    for params, where, values in cases:
        expected = query(
            dict_cursor,
            f"select order_id from business_vault.vw_order_analytics where {where}"
            " order by transaction_ts desc, order_id desc",
            values,
        )
        assert expected, params
        page = client.get("/orders", params={**params, "limit": 1000}).json()
        assert page["total"] == len(expected), params
        assert [item["order_id"] for item in page["items"]] == [
            row["order_id"] for row in expected[:1000]
        ], params


def test_orders_of_unknown_customers_have_null_customer(client: httpx.Client, dict_cursor) -> None:
    ghost_order = query(
        dict_cursor,
        "select hub.order_id, sat.transaction_ts from raw_vault.link_customer_order as link"
        " join raw_vault.hub_order as hub using (order_hk)"
        " join raw_vault.sat_order_details as sat using (order_hk)"
        " where link.customer_hk = '00000000000000000000000000000000'"
        " order by hub.order_id limit 1",
    )[0]
    day = ghost_order["transaction_ts"].astimezone(UTC).date().isoformat()
    page = client.get("/orders", params={"date_from": day, "date_to": day, "limit": 1000}).json()
    matches = [item for item in page["items"] if item["order_id"] == ghost_order["order_id"]]
    assert len(matches) == 1
    assert matches[0]["customer_id"] is None and matches[0]["customer_name"] is None


# Invalid requests, authentication, rate limit, outage ----------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "location"),
    [
        ("/customers", {"limit": 0}, "query.limit"),
        ("/customers", {"limit": 1001}, "query.limit"),
        ("/customers", {"skip": -1}, "query.skip"),
        ("/customers", {"sort": "email"}, "query.sort"),
        ("/customers", {"segment": ""}, "query.segment"),
        ("/customers", {"search": ""}, "query.search"),
        ("/customers", {"country": "x" * 256}, "query.country"),
        ("/customers", {"cursor": "not-a-cursor"}, "query.cursor"),
        ("/customers/bad%01id", {}, "path.customer_id"),
        ("/customers/%20%20", {}, "path.customer_id"),
        ("/customers/%20/orders", {}, "path.customer_id"),
        ("/customers/%09/history", {}, "path.customer_id"),
        ("/orders", {"customer_id": "  "}, "query.customer_id"),
        ("/orders", {"date_from": "2024-02-30"}, "query.date_from"),
        ("/orders", {"date_from": "2024-03-02", "date_to": "2024-03-01"}, "query.date_from"),
        ("/orders", {"status": "lost"}, "query.status"),
        ("/products", {"sort": "price"}, "query.sort"),
        ("/realtime/metrics", {"minutes": 0}, "query.minutes"),
        ("/customers", {"segement": "Corporate"}, "query.segement"),
        ("/customers", {"limit": ["5", "6"]}, "query.limit"),
        ("/health", {"x": "1"}, "query.x"),
        ("/ready", {"x": ["1", "2"]}, "query.x"),
        ("/metrics", {"x": "1"}, "query.x"),
    ],
)
def test_invalid_input_is_422_with_a_clear_message(
    client: httpx.Client, path: str, params: dict, location: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith("invalid request: ")
    assert location in [error["location"] for error in body["errors"]]


def test_each_refused_parameter_is_named_once(client: httpx.Client) -> None:
    for path, params in [
        ("/ready", {"x": ["1", "2", "3"]}),
        ("/customers", {"limit": ["1", "2", "3"]}),
    ]:
        response = client.get(path, params=params)
        assert response.status_code == 422, path
        name = next(iter(params))
        assert [error["location"] for error in response.json()["errors"]] == [f"query.{name}"]


@pytest.mark.parametrize(
    ("path", "params", "payload"),
    [
        # Decodes, but PostgreSQL could not take it: a lone surrogate in the key, numbers
        # beyond the numeric(30,2) money columns.
        ("/customers", {}, ["customers", "customer_id", None, "\ud800"]),
        ("/orders", {}, ["orders", "transaction_ts", "2024-01-01T00:00:00+00:00", "\ud800"]),
        (
            "/customers",
            {"sort": "lifetime_value"},
            ["customers", "lifetime_value", "1E-999999", "C000001"],
        ),
        ("/products", {"sort": "revenue"}, ["products", "revenue", "1E+28", "P00001"]),
    ],
)
def test_a_forged_cursor_is_422_not_a_server_error(
    client: httpx.Client, path: str, params: dict, payload: list
) -> None:
    response = client.get(path, params={**params, "cursor": cursor_token(payload)})
    assert response.status_code == 422
    assert [error["location"] for error in response.json()["errors"]] == ["query.cursor"]


def test_a_cursor_only_fits_its_own_sort(client: httpx.Client) -> None:
    cursor = client.get("/customers", params={"limit": 5, "sort": "lifetime_value"}).json()[
        "next_cursor"
    ]
    response = client.get("/customers", params={"cursor": cursor, "sort": "customer_id"})
    assert response.status_code == 422
    assert "sort=lifetime_value" in response.json()["detail"]


def test_api_key_is_required_and_checked(api_url: str) -> None:
    missing = httpx.get(api_url + "/customers")
    assert missing.status_code == 401
    assert "X-API-Key" in missing.json()["detail"]
    wrong = httpx.get(api_url + "/customers", headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}
    for key in TEST_API_KEYS:
        assert httpx.get(api_url + "/orders", headers={"X-API-Key": key}).status_code == 200


def test_cli_prints_a_key_the_api_accepts(api_url: str, loaded_warehouse: Settings) -> None:
    env = {**os.environ, "C360_API_KEYS": ",".join(TEST_API_KEYS)}
    printed = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "api", "token"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert httpx.get(api_url + "/products", headers={"X-API-Key": printed}).status_code == 200


def test_rate_limit_answers_429_with_retry_after(
    loaded_warehouse: Settings, tmp_path: Path
) -> None:
    overrides = {"C360_API_RATE_LIMIT_PER_MINUTE": "5"}
    with running_api(loaded_warehouse, tmp_path, "rate-limited", **overrides) as url:
        first_key = {"X-API-Key": TEST_API_KEYS[0]}
        statuses = [httpx.get(url + "/products", headers=first_key).status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = httpx.get(url + "/products", headers=first_key)
        assert limited.status_code == 429
        # 5 a minute is one every 12 s; the bucket has just been emptied.
        assert 1 <= int(limited.headers["retry-after"]) <= 12
        assert "5 requests per minute" in limited.json()["detail"]
        # The limit is per key: the other key still has its whole allowance.
        other_key = {"X-API-Key": TEST_API_KEYS[1]}
        assert httpx.get(url + "/products", headers=other_key).status_code == 200
        # Probes are not limited.
        assert all(httpx.get(url + "/health").status_code == 200 for _ in range(10))


def test_failed_authentications_are_limited_per_address(
    loaded_warehouse: Settings, tmp_path: Path
) -> None:
    allowance = Settings.model_fields["api_failed_auth_per_minute"].default
    overrides = {"C360_API_FAILED_AUTH_PER_MINUTE": str(allowance)}
    with running_api(loaded_warehouse, tmp_path, "guessing", **overrides) as url:
        guesses = [
            httpx.get(url + "/products", headers={"X-API-Key": f"guess-{number}"})
            for number in range(allowance + 1)
        ]
        assert [guess.status_code for guess in guesses] == [401] * allowance + [429]
        # 30 a minute is one every 2 s; the allowance has just been used up.
        assert 1 <= int(guesses[-1].headers["retry-after"]) <= 2
        assert "too many failed authentications" in guesses[-1].json()["detail"]
        # Meanwhile the address is refused whatever it sends: a right guess looks like a wrong one.
        assert httpx.get(url + "/products", headers=KEY_HEADERS).status_code == 429
        # Once its allowance refills (a failure every 2 s), it is served again.
        time.sleep(int(guesses[-1].headers["retry-after"]))
        assert httpx.get(url + "/products", headers=KEY_HEADERS).status_code == 200


def test_jwt_mode_accepts_only_valid_bearer_tokens(
    loaded_warehouse: Settings, tmp_path: Path
) -> None:
    def token(
        secret: str = TEST_JWT_SECRET,
        expires_in: timedelta = timedelta(minutes=5),
        subject: str = "analyst",
    ) -> str:
        now = datetime.now(UTC)
        claims = {"sub": subject, "iat": now, "exp": now + expires_in}
        return jwt.encode(claims, secret, algorithm="HS256")

    with running_api(loaded_warehouse, tmp_path, "jwt", C360_API_AUTH_MODE="jwt") as url:

        def get(headers: dict) -> httpx.Response:
            return httpx.get(url + "/products", params={"limit": 1}, headers=headers)

        assert get({"Authorization": f"Bearer {token()}"}).status_code == 200
        assert get({}).status_code == 401
        assert get({"X-API-Key": TEST_API_KEYS[0]}).status_code == 401
        expired = get({"Authorization": f"Bearer {token(expires_in=timedelta(minutes=-1))}"})
        assert expired.status_code == 401 and expired.json()["detail"] == "bearer token has expired"
        forged = get(
            {"Authorization": f"Bearer {token(secret='another-secret-of-enough-length!!')}"}
        )
        assert forged.status_code == 401
        assert get({"Authorization": "Bearer not.a.jwt"}).status_code == 401
        # Nobody to charge the request to.
        assert get({"Authorization": f"Bearer {token(subject=' ')}"}).status_code == 401

        env = {**os.environ, "C360_JWT_SECRET": TEST_JWT_SECRET, "C360_API_AUTH_MODE": "jwt"}
        printed = subprocess.run(
            [sys.executable, "-m", "customer360.cli", "api", "token", "--jwt"],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert get({"Authorization": f"Bearer {printed}"}).status_code == 200

        schema = httpx.get(url + "/openapi.json").json()
        assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer"}


def test_auth_mode_none_serves_without_credentials(
    loaded_warehouse: Settings, tmp_path: Path
) -> None:
    with running_api(loaded_warehouse, tmp_path, "open", C360_API_AUTH_MODE="none") as url:
        assert httpx.get(url + "/products", params={"limit": 1}).status_code == 200


def test_database_outage_is_503_json_never_a_traceback(
    loaded_warehouse: Settings, tmp_path: Path
) -> None:
    nothing_listens = str(free_port())
    overrides = {"C360_EMBEDDED_PG_PORT": nothing_listens, "C360_API_POOL_TIMEOUT": "1"}
    with running_api(loaded_warehouse, tmp_path, "outage", **overrides) as url:
        assert httpx.get(url + "/health").status_code == 200
        ready = httpx.get(url + "/ready")
        assert ready.status_code == 503
        for path in (
            "/customers",
            "/customers/C000002",
            "/orders",
            "/products",
            "/realtime/metrics",
        ):
            response = httpx.get(url + path, headers=KEY_HEADERS, timeout=30)
            assert response.status_code == 503, path
            assert response.json() == {"detail": "the database is unavailable; retry shortly"}
        log = (tmp_path / "api-outage.log").read_text()
        assert "Traceback" not in log


def test_the_api_recovers_by_itself_when_the_database_comes_back(
    c360_settings: Settings, tmp_path: Path
) -> None:
    """A database of its own, stopped for longer than the pool's connection retries would
    take to back off past a minute, then started again: the API answers 503 meanwhile and
    serves again within seconds of the database, without a restart. Connections the database
    dropped fail no request."""
    settings = c360_settings.model_copy(
        update={"work_dir": tmp_path / "work", "embedded_pg_port": free_port()}
    )
    server = EmbeddedServer(
        pgdata=tmp_path / "work" / "postgres" / "pgdata", port=settings.embedded_pg_port
    )
    server.start()
    try:
        migrate(settings)
        # The default wait for a connection: time for the pool to replace dropped ones.
        overrides = {
            "C360_API_POOL_TIMEOUT": str(Settings.model_fields["api_pool_timeout"].default)
        }
        with running_api(settings, tmp_path, "comes-back", **overrides) as url:

            def status() -> int:
                return httpx.get(url + "/products", headers=KEY_HEADERS, timeout=30).status_code

            assert status() == 200
            with psycopg2.connect(settings.dsn) as conn, conn.cursor() as cur:
                cur.execute(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                    " where application_name = 'c360-api'"
                )
                assert cur.fetchone()[0] > 0
            conn.close()
            assert [status() for _ in range(4)] == [200] * 4

            server.stop()
            # Without giving up, the retries' doubling delays would reach 32 s by now.
            outage_ends = time.monotonic() + 40
            while time.monotonic() < outage_ends:
                assert status() == 503
                time.sleep(1)
            server.start()
            back = time.monotonic()
            while status() != 200:
                assert time.monotonic() - back < 15, "the API did not serve again"
                time.sleep(0.5)
    finally:
        server.stop()


def test_a_query_cancelled_by_the_statement_timeout_is_503_saying_so(
    loaded_warehouse: Settings, tmp_path: Path, dict_cursor
) -> None:
    customer = query(
        dict_cursor,
        "select customer_id from business_vault.vw_customer_360 order by customer_id limit 1",
    )[0]["customer_id"]
    overrides = {"C360_API_STATEMENT_TIMEOUT_MS": "300"}
    with running_api(loaded_warehouse, tmp_path, "slow-query", **overrides) as url:

        def get_profile() -> httpx.Response:
            return httpx.get(f"{url}/customers/{customer}", headers=KEY_HEADERS, timeout=30)

        assert get_profile().status_code == 200
        blocker = psycopg2.connect(loaded_warehouse.dsn)
        try:
            with blocker.cursor() as cur:
                # As during a load: the refresh holds its lock on the view until it commits.
                cur.execute("refresh materialized view business_vault.mv_customer_360")
                blocked = get_profile()
        finally:
            blocker.rollback()
            blocker.close()
        assert blocked.status_code == 503
        assert blocked.json() == {
            "detail": "the query was cancelled after running longer than 300 ms; retry shortly"
        }
        assert blocked.headers["retry-after"] == "5"
        # The connection survived the cancelled query: the database was never unavailable.
        assert get_profile().status_code == 200
    assert "Traceback" not in (tmp_path / "api-slow-query.log").read_text()
