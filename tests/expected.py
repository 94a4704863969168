"""An independent reading of the CSV files: what the warehouse should hold, computed in plain
Python from the files and the generator's manifest of dirty rows, never from the loader."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
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
    return ExpectedWarehouse(
        customers={**base.customers, **day2.customers},
        products={**base.products, **day2.products},
        orders={**base.orders, **day2.orders},
    )


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


def _ntile(ordered_keys: list[str], buckets: int = 5) -> dict[str, int]:
    """PostgreSQL's ntile(): the first (n % buckets) groups get one extra member."""
    n = len(ordered_keys)
    size, extra = divmod(n, buckets)
    scores, position = {}, 0
    for bucket in range(1, buckets + 1):
        count = size + (1 if bucket <= extra else 0)
        for key in ordered_keys[position : position + count]:
            scores[key] = bucket
        position += count
    return scores


def _rfm(metrics: dict[str, dict]) -> None:
    buyers = [key for key, m in metrics.items() if m["revenue_orders"] > 0]
    recency = _ntile(sorted(buyers, key=lambda k: (metrics[k]["last_revenue"], k)))
    frequency = _ntile(sorted(buyers, key=lambda k: (metrics[k]["revenue_orders"], k)))
    monetary = _ntile(sorted(buyers, key=lambda k: (metrics[k]["lifetime_value"], k)))
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
