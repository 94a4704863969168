"""An independent reading of the CSV files: what the warehouse should hold, computed in plain
Python from the files and the generator's manifest of dirty rows, never from the loader."""

from __future__ import annotations

import bisect
import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

GHOST_ID = "-1"
LOADED_KINDS = {"unknown_customer", "unknown_product"}  # loaded against a ghost record
NON_REVENUE_STATUSES = {"cancelled", "returned"}


def normalise(key: str | None) -> str | None:
    """The business key as the vault stores it: trimmed, upper-case, empty meaning missing."""
    if key is None:
        return None
    return key.strip(" \t\r\n").upper() or None


@dataclass
class ExpectedWarehouse:
    customers: dict[str, dict] = field(default_factory=dict)
    products: dict[str, dict] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)
    rejected: dict[str, set[tuple[int, str]]] = field(default_factory=dict)  # file -> (line, kind)
    ghost_linked: dict[str, set[tuple[int, str]]] = field(default_factory=dict)


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(physical line number, row) for every well-formed record of a CSV file."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = []
        for record in reader:
            if len(record) == len(header):
                rows.append((reader.line_num, dict(zip(header, record, strict=True))))
        return rows


def expected_warehouse(data_dir: Path) -> ExpectedWarehouse:
    """What loading ``data_dir`` into an empty vault must produce."""
    manifest = json.loads((data_dir / "dirty_rows.json").read_text())
    dirty: dict[str, dict[int, str]] = defaultdict(dict)
    for entry in manifest["dirty_rows"]:
        dirty[entry["file"]][entry["line"]] = entry["kind"]
    expected = ExpectedWarehouse()
    for file_name in ("customers.csv", "products.csv", "transactions.csv"):
        expected.rejected[file_name] = {
            (line, kind) for line, kind in dirty[file_name].items() if kind not in LOADED_KINDS
        }
        expected.ghost_linked[file_name] = {
            (line, kind) for line, kind in dirty[file_name].items() if kind in LOADED_KINDS
        }

    def clean_rows(file_name: str) -> list[tuple[int, dict]]:
        rejected_lines = {line for line, _ in expected.rejected[file_name]}
        return [
            (line, row)
            for line, row in read_rows(data_dir / file_name)
            if line not in rejected_lines
        ]

    for _, row in clean_rows("customers.csv"):
        expected.customers[normalise(row["customer_id"])] = row
    for _, row in clean_rows("products.csv"):
        expected.products[normalise(row["product_id"])] = row
    for _, row in clean_rows("transactions.csv"):
        customer = normalise(row["customer_id"])
        product = normalise(row["product_id"])
        expected.orders[normalise(row["transaction_id"])] = {
            **row,
            "customer_named": customer,
            "product_named": product,
            "customer_key": customer if customer in expected.customers else GHOST_ID,
            "product_key": product if product in expected.products else GHOST_ID,
            "total": Decimal(row["total_amount"]),
            "quantity_int": int(row["quantity"]),
            "day": datetime.strptime(row["transaction_ts"], "%Y-%m-%d %H:%M:%S").date(),
        }
    return expected


def expected_after_next_day(base: ExpectedWarehouse, next_dir: Path) -> ExpectedWarehouse:
    """The expected warehouse after loading the next-day delivery on top of ``base``."""
    day2 = expected_warehouse(next_dir)
    customers = {**base.customers, **day2.customers}
    products = {**base.products, **day2.products}
    # An order is linked to the customer and product it names once they have arrived, even
    # when they arrive after the order (late-arriving customers and products).
    orders = {
        key: {
            **order,
            "customer_key": order["customer_named"]
            if order["customer_named"] in customers
            else GHOST_ID,
            "product_key": order["product_named"]
            if order["product_named"] in products
            else GHOST_ID,
        }
        for key, order in {**base.orders, **day2.orders}.items()
    }
    return ExpectedWarehouse(customers=customers, products=products, orders=orders)


def customer_metrics(expected: ExpectedWarehouse) -> dict[str, dict]:
    """The vw_customer_360 metrics of every customer, by the documented definitions."""
    metrics: dict[str, dict] = {
        key: {
            "order_count": 0,
            "lifetime_value": Decimal("0.00"),
            "revenue_orders": 0,
            "first": None,
            "last": None,
            "last_revenue": None,
            "units": Counter(),
        }
        for key in expected.customers
    }
    for order in expected.orders.values():
        if order["customer_key"] == GHOST_ID:
            continue
        m = metrics[order["customer_key"]]
        m["order_count"] += 1
        m["first"] = min(filter(None, [m["first"], order["day"]]))
        m["last"] = max(filter(None, [m["last"], order["day"]]))
        if order["order_status"] not in NON_REVENUE_STATUSES:
            m["revenue_orders"] += 1
            m["lifetime_value"] += order["total"]
            m["last_revenue"] = max(filter(None, [m["last_revenue"], order["day"]]))
            if order["product_key"] != GHOST_ID:
                category = expected.products[order["product_key"]]["category"]
                m["units"][category] += order["quantity_int"]
    for m in metrics.values():
        m["avg_order_value"] = (
            (m["lifetime_value"] / m["revenue_orders"]).quantize(Decimal("0.01"), ROUND_HALF_UP)
            if m["revenue_orders"]
            else None
        )
        m["favourite_category"] = (
            sorted(m["units"].items(), key=lambda item: (-item[1], item[0]))[0][0]
            if m["units"]
            else None
        )
    _rfm(metrics)
    return metrics


def _quintiles(values: dict[str, object]) -> dict[str, int]:
    """Score 1-5 by the fifth of the ranking each value falls in: a value's rank is one more
    than the number of smaller values, so equal values score alike."""
    ordered = sorted(values.values())
    n = len(ordered)
    return {key: 1 + 5 * bisect.bisect_left(ordered, value) // n for key, value in values.items()}


def _rfm(metrics: dict[str, dict]) -> None:
    buyers = [key for key, m in metrics.items() if m["revenue_orders"] > 0]
    recency = _quintiles({key: metrics[key]["last_revenue"] for key in buyers})
    frequency = _quintiles({key: metrics[key]["revenue_orders"] for key in buyers})
    monetary = _quintiles({key: metrics[key]["lifetime_value"] for key in buyers})
    for key, m in metrics.items():
        if key not in recency:
            m["rfm"] = (None, None, None, "No Purchases")
            continue
        r, f, v = recency[key], frequency[key], monetary[key]
        if r >= 4 and f >= 4:
            segment = "Champions"
        elif f >= 4:
            segment = "Loyal Customers"
        elif r >= 4 and f <= 2:
            segment = "New Customers"
        elif r <= 2 and f >= 3:
            segment = "At Risk"
        elif r <= 2 and f <= 2:
            segment = "Hibernating"
        else:
            segment = "Potential Loyalists"
        m["rfm"] = (r, f, v, segment)


def product_metrics(expected: ExpectedWarehouse) -> dict[str, dict]:
    """The vw_product_analytics figures of every product."""
    metrics = {
        key: {"units_sold": 0, "revenue": Decimal("0.00"), "order_count": 0, "customers": set()}
        for key in expected.products
    }
    for order in expected.orders.values():
        if order["product_key"] == GHOST_ID or order["order_status"] in NON_REVENUE_STATUSES:
            continue
        m = metrics[order["product_key"]]
        m["units_sold"] += order["quantity_int"]
        m["revenue"] += order["total"]
        m["order_count"] += 1
        if order["customer_key"] != GHOST_ID:
            m["customers"].add(order["customer_key"])
    for key, m in metrics.items():
        cost = Decimal(expected.products[key]["cost"]).quantize(Decimal("0.01"))
        m["margin"] = m["revenue"] - m["units_sold"] * cost
        m["distinct_customers"] = len(m["customers"])
    by_category: dict[str, list[str]] = defaultdict(list)
    for key, row in expected.products.items():
        by_category[row["category"].strip()].append(key)
    for keys in by_category.values():
        ranked = sorted(keys, key=lambda k: -metrics[k]["revenue"])
        for key in keys:
            # rank(): one more than the number of products with strictly more revenue.
            metrics[key]["category_rank"] = 1 + sum(
                1 for other in ranked if metrics[other]["revenue"] > metrics[key]["revenue"]
            )
    return metrics


def parse_day(text: str) -> date:
    return datetime.strptime(text, "%Y-%m-%d").date()


def text(value: str | None) -> str | None:
    """A text value as the warehouse keeps it: trimmed of spaces, tabs and line breaks, empty
    meaning missing."""
    if value is None:
        return None
    return value.strip(" \t\r\n") or None


def full_name(customer: dict) -> str | None:
    """Given and family name, either left out when missing (concat_ws)."""
    return (
        " ".join(filter(None, [text(customer["first_name"]), text(customer["last_name"])])) or None
    )


CUSTOMER_TEXT = ("first_name", "last_name", "email", "phone", "city", "state", "country")
PRODUCT_TEXT = ("product_name", "category", "brand")


# Checks of the business views against the expected warehouse, shared by the view tests.


def rows_by_key(cursor, sql: str) -> dict[str, dict]:
    """A view's rows by their first column."""
    cursor.execute(sql)
    names = [column.name for column in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def assert_customer_360_matches(db_cursor, expected: ExpectedWarehouse) -> None:
    """Every row of vw_customer_360 is what the files say."""
    metrics = customer_metrics(expected)
    profiles = rows_by_key(db_cursor, "select * from business_vault.vw_customer_360")

    assert set(profiles) == set(expected.customers)
    for key, row in expected.customers.items():
        profile, m = profiles[key], metrics[key]
        for column in CUSTOMER_TEXT:
            assert profile[column] == text(row[column]), (key, column)
        assert profile["customer_segment"] == text(row["customer_segment"]), key
        assert profile["full_name"] == full_name(row), key
        signup = text(row["signup_date"])
        assert profile["signup_date"] == (parse_day(signup) if signup else None), key
        assert profile["order_count"] == m["order_count"], key
        assert profile["lifetime_value"] == m["lifetime_value"], key
        assert profile["avg_order_value"] == m["avg_order_value"], key
        assert profile["first_order_date"] == m["first"], key
        assert profile["last_order_date"] == m["last"], key
        assert profile["favourite_category"] == m["favourite_category"], key
        scores = (
            profile["rfm_recency_score"],
            profile["rfm_frequency_score"],
            profile["rfm_monetary_score"],
            profile["rfm_segment"],
        )
        assert scores == m["rfm"], key


def assert_product_analytics_matches(db_cursor, expected: ExpectedWarehouse) -> None:
    """Every row of vw_product_analytics is what the files say."""
    metrics = product_metrics(expected)
    products = rows_by_key(db_cursor, "select * from business_vault.vw_product_analytics")

    assert set(products) == set(expected.products)
    for key, m in metrics.items():
        row, delivered = products[key], expected.products[key]
        for column in PRODUCT_TEXT:
            assert row[column] == text(delivered[column]), (key, column)
        assert row["unit_price"] == Decimal(delivered["unit_price"].strip()), key
        assert row["cost"] == Decimal(delivered["cost"].strip()), key
        assert row["units_sold"] == m["units_sold"], key
        assert row["revenue"] == m["revenue"], key
        assert row["margin"] == m["margin"], key
        assert row["order_count"] == m["order_count"], key
        assert row["distinct_customers"] == m["distinct_customers"], key
        assert row["category_rank"] == m["category_rank"], key


def assert_order_analytics_matches(db_cursor, expected: ExpectedWarehouse) -> None:
    """vw_order_analytics has every order with its customer and product, as the files say."""
    orders = rows_by_key(db_cursor, "select * from business_vault.vw_order_analytics")

    assert set(orders) == set(expected.orders)
    total = sum((o["total"] for o in expected.orders.values()), Decimal("0"))
    assert sum((o["total_amount"] for o in orders.values()), Decimal("0")) == total
    for key, order in expected.orders.items():
        row = orders[key]
        delivered_at = datetime.strptime(order["transaction_ts"].strip(), "%Y-%m-%d %H:%M:%S")
        assert row["transaction_ts"] == delivered_at.replace(tzinfo=UTC), key
        assert row["order_date"] == order["day"], key
        assert row["order_status"] == text(order["order_status"]).lower(), key
        assert row["payment_method"] == text(order["payment_method"]), key
        assert row["quantity"] == order["quantity_int"], key
        assert row["unit_price"] == Decimal(order["unit_price"].strip()), key
        assert row["discount"] == Decimal(text(order["discount"]) or "0"), key
        assert row["total_amount"] == order["total"], key
        customer_columns = (
            "customer_id", "customer_name", "customer_email", "customer_city",
            "customer_country", "customer_segment",
        )  # fmt: skip
        if order["customer_key"] == GHOST_ID:
            assert [row[column] for column in customer_columns] == [None] * 6, key
        else:
            customer = expected.customers[order["customer_key"]]
            assert [row[column] for column in customer_columns] == [
                order["customer_key"],
                full_name(customer),
                text(customer["email"]),
                text(customer["city"]),
                text(customer["country"]),
                text(customer["customer_segment"]),
            ], key
        product_columns = ("product_id", "product_name", "category", "brand")
        if order["product_key"] == GHOST_ID:
            assert [row[column] for column in product_columns] == [None] * 4, key
        else:
            product = expected.products[order["product_key"]]
            assert [row[column] for column in product_columns] == [
                order["product_key"],
                *(text(product[column]) for column in PRODUCT_TEXT),
            ], key
