"""Small deliveries written line by line, for tests whose expected values are read off the
lines themselves."""

from __future__ import annotations

from pathlib import Path

CUSTOMERS_HEADER = (
    "customer_id,first_name,last_name,email,phone,city,state,country,signup_date,customer_segment"
)
PRODUCTS_HEADER = "product_id,product_name,category,brand,unit_price,cost"
TRANSACTIONS_HEADER = (
    "transaction_id,customer_id,product_id,quantity,unit_price,discount,total_amount,"
    "transaction_ts,payment_method,order_status"
)


def customer(key: str, city: str = "Leeds", signup: str = "2024-01-02", email: str = "") -> str:
    email = email or f"{key.lower()}@example.net"
    return f"{key},Ann,Lee,{email},,{city},England,United Kingdom,{signup},Consumer"


def product(key: str, category: str = "Tools") -> str:
    return f"{key},Thing {key},{category},Acme,10.00,4.00"


def order(
    key: str,
    customer_id: str = "C1",
    product_id: str = "P1",
    total: str = "10.00",
    discount: str = "0.00",
    ts: str = "2025-03-01 10:00:00",
    status: str = "completed",
) -> str:
    return f"{key},{customer_id},{product_id},1,{total},{discount},{total},{ts},paypal,{status}"


def deliver(
    folder: Path,
    customers: list[str] | None = None,
    products: list[str] | None = None,
    transactions: list[str] | None = None,
) -> Path:
    """Write one delivery; sources left out get a single clean row."""
    folder.mkdir(parents=True)
    files = {
        "customers.csv": (CUSTOMERS_HEADER, customers or [customer("C1")]),
        "products.csv": (PRODUCTS_HEADER, products or [product("P1")]),
        "transactions.csv": (TRANSACTIONS_HEADER, transactions or [order("T1")]),
    }
    for name, (header, lines) in files.items():
        (folder / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return folder
