"""Deterministic sample data in the canonical CSV contract, with known dirty rows.

``generate_dataset`` writes ``customers.csv``, ``products.csv`` and ``transactions.csv`` plus
``dirty_rows.json``, a manifest naming every deliberately broken line and the reason the loader
records for it (it quarantines the line, or loads it linked to a ghost record).
``generate_next_day`` reads such a set and writes the delivery of the next day: full customer
and product snapshots with a few changes, new customers, and some of the customers and products
day-1 orders named before anybody had delivered them (arriving late); re-delivered orders with
a new status and new orders; plus ``changes.json`` listing exactly what changed.

Everything derives from the seed and a fixed reference date, never from the clock, so the same
seed gives byte-identical files. Rows are written as they are generated, so a million
transactions need no more memory than the customer and product id lists.

Each file is written under a temporary name and renamed when complete, and the manifest comes
last, so an interrupted run never leaves a cut-off file under a final name;
``dataset_complete`` tells whether a folder holds a whole data set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from customer360.errors import UserFacingError
from customer360.sources import CANONICAL_ORDER

# Dates are relative to this day, not to today, so that reruns give the same files.
REFERENCE_DATE = date(2026, 1, 1)
SIGNUP_WINDOW_DAYS = 3 * 365
TRANSACTION_WINDOW_DAYS = 365

DEFAULT_CUSTOMERS = 10_000
DEFAULT_PRODUCTS = 5_000
DEFAULT_TRANSACTIONS = 100_000
DEFAULT_SEED = 42
DEFAULT_DIRTY_RATE = 0.01
# Beyond this, too few clean customers and products remain for transactions to reference.
MAX_DIRTY_RATE = 0.2

CUSTOMERS_FILE = "customers.csv"
PRODUCTS_FILE = "products.csv"
TRANSACTIONS_FILE = "transactions.csv"
SOURCE_FILES = (CUSTOMERS_FILE, PRODUCTS_FILE, TRANSACTIONS_FILE)
MANIFEST_FILE = "dirty_rows.json"
CHANGES_FILE = "changes.json"
# What a whole data set holds; the manifest is written last, so it marks a finished run.
DATASET_FILES = (*SOURCE_FILES, MANIFEST_FILE)
NEXT_DAY_FILES = (*SOURCE_FILES, CHANGES_FILE, MANIFEST_FILE)
# Marks a folder the generator writes into (see _start_dataset).
GENERATED_MARKER = ".generated-sample-data"

# The canonical headers of the input contract.
CUSTOMER_COLUMNS = list(CANONICAL_ORDER["customers"])
PRODUCT_COLUMNS = list(CANONICAL_ORDER["products"])
TRANSACTION_COLUMNS = list(CANONICAL_ORDER["transactions"])

# The reasons the loader records for a row (in audit.quarantine); the manifest uses exactly
# these strings.
MISSING_KEY = "missing_key"
DUPLICATE_ROW = "duplicate_row"
DUPLICATE_KEY = "duplicate_key"
INVALID_DATE = "invalid_date"
INVALID_NUMBER = "invalid_number"
NEGATIVE_QUANTITY = "negative_quantity"
UNKNOWN_CUSTOMER = "unknown_customer"
UNKNOWN_PRODUCT = "unknown_product"
MALFORMED_ROW = "malformed_row"

CUSTOMER_DEFECTS = (MISSING_KEY, DUPLICATE_ROW, DUPLICATE_KEY, INVALID_DATE, MALFORMED_ROW)
PRODUCT_DEFECTS = (MISSING_KEY, DUPLICATE_ROW, DUPLICATE_KEY, INVALID_NUMBER, MALFORMED_ROW)
TRANSACTION_DEFECTS = (
    MISSING_KEY,
    DUPLICATE_ROW,
    DUPLICATE_KEY,
    INVALID_DATE,
    INVALID_NUMBER,
    NEGATIVE_QUANTITY,
    UNKNOWN_CUSTOMER,
    UNKNOWN_PRODUCT,
    MALFORMED_ROW,
)
# Below this many rows a file gets no dirty rows: one of each kind would swamp it.
MIN_ROWS_FOR_DIRTY = 100

# Plan actions besides the defect kinds: the later copy that wins over a duplicate_row, and
# the later re-keyed row that wins over a duplicate_key original.
_LATER_COPY = "later_copy"
_KEY_VARIANT = "key_variant"

FIRST_NAMES = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Daniel", "Karen", "Matthew", "Nancy", "Anthony", "Emily", "Mark", "Olivia", "Liam", "Emma",
    "Noah", "Sophia", "Lucas", "Mia", "Ethan", "Chloé", "José", "Zoë", "Łukasz", "Björn", "Søren",
    "Renée", "François", "Małgorzata", "Jürgen", "Ana", "João", "Inés", "Anne-Marie", "Siobhán",
    "Dagný", "Kenji", "Priya", "Mateo", "Aoife", "Zoltán",
]  # fmt: skip
LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson",
    "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker", "Young", "King",
    "Müller", "Ørsted", "Núñez", "Kowalczyk", "Wójcik", "Schäfer", "Dubois", "Lefèvre", "Øberg",
    "Åberg", "Gonçalves", "Peña", "O'Brien", "Nakamura", "Patel", "Fernández", "Jovanović",
    "Ó Súilleabháin", "Van der Berg", "Sørensen",
]  # fmt: skip
# (city, state, country, phone prefix): a customer's city fixes the other three.
LOCATIONS = [
    ("New York", "NY", "United States", "+1"),
    ("Los Angeles", "CA", "United States", "+1"),
    ("Chicago", "IL", "United States", "+1"),
    ("Houston", "TX", "United States", "+1"),
    ("Seattle", "WA", "United States", "+1"),
    ("Miami", "FL", "United States", "+1"),
    ("Denver", "CO", "United States", "+1"),
    ("Boston", "MA", "United States", "+1"),
    ("Toronto", "ON", "Canada", "+1"),
    ("Montréal", "QC", "Canada", "+1"),
    ("Vancouver", "BC", "Canada", "+1"),
    ("London", "England", "United Kingdom", "+44"),
    ("Manchester", "England", "United Kingdom", "+44"),
    ("Edinburgh", "Scotland", "United Kingdom", "+44"),
    ("Berlin", "Berlin", "Germany", "+49"),
    ("München", "Bavaria", "Germany", "+49"),
    ("Köln", "North Rhine-Westphalia", "Germany", "+49"),
    ("Paris", "Île-de-France", "France", "+33"),
    ("Lyon", "Auvergne-Rhône-Alpes", "France", "+33"),
    ("Madrid", "Community of Madrid", "Spain", "+34"),
    ("Málaga", "Andalusia", "Spain", "+34"),
    ("Kraków", "Lesser Poland", "Poland", "+48"),
    ("København", "Capital Region", "Denmark", "+45"),
    ("Malmö", "Skåne", "Sweden", "+46"),
    ("São Paulo", "SP", "Brazil", "+55"),
    ("Sydney", "NSW", "Australia", "+61"),
    ("Dublin", "Leinster", "Ireland", "+353"),
    ("Tokyo", "Tokyo", "Japan", "+81"),
]
SEGMENTS = ["Consumer", "Corporate", "Home Office", "Small Business"]
SEGMENT_WEIGHTS = [50, 25, 15, 10]
EMAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]
# category -> (lowest, highest price in cents, product nouns)
CATEGORIES = {
    "Electronics": (1_500, 200_000, ["Headphones", "Monitor 27\"", "Keyboard", "Smartwatch",
                                     "Speaker", "Tablet", "Camera"]),
    "Home & Kitchen": (500, 60_000, ["Blender", "Coffee Maker", "Knife Set", "Toaster", "Kettle",
                                     "Cookware Set"]),
    "Sports & Outdoors": (800, 150_000, ["Yoga Mat", "Tent", "Road Bike", "Dumbbells",
                                         "Running Shoes"]),
    "Books": (100, 8_000, ["Cookbook", "Novel", "Travel Guide", "Atlas", "Biography"]),
    "Clothing": (500, 40_000, ["Jacket", "Sweater", "Jeans", "Scarf", "Raincoat"]),
    "Beauty": (300, 15_000, ["Face Cream", "Perfume", "Shampoo", "Hair Dryer"]),
    "Toys & Games": (300, 30_000, ["Board Game", "Puzzle", "Building Blocks", "Plush Bear"]),
    "Office": (100, 120_000, ["Desk, standing", "Chair, ergonomic", "Notebook", "Pen Set",
                              "Desk Lamp"]),
    "Garden": (400, 90_000, ["Hose", "Lawn Mower", "Planter", "Pruning Shears"]),
}  # fmt: skip
BRANDS = [
    "Acme", "Nordlicht", "Ørsted Audio", "Café Bonté", "Zenith", "Blåbær", "Kirin", "Vértice",
    "Lumière", "Sakura", "Hanse", "Polaris", "Greenfield", "Märklin & Söhne", "Atlas Works",
]  # fmt: skip
ADJECTIVES = ["Classic", "Pro", "Ultra", "Eco", "Smart", "Compact", "Deluxe", "Essential", "Lite"]

QUANTITY_WEIGHTS = {1: 40, 2: 22, 3: 12, 4: 8, 5: 6, 6: 4, 7: 3, 8: 2, 9: 2, 10: 1}
DISCOUNT_WEIGHTS = {0: 50, 5: 20, 10: 15, 15: 10, 20: 5}  # percent
PAYMENT_WEIGHTS = {
    "credit_card": 45,
    "debit_card": 25,
    "paypal": 18,
    "bank_transfer": 7,
    "gift_card": 5,
}
STATUS_WEIGHTS = {"completed": 82, "shipped": 7, "pending": 5, "cancelled": 3, "returned": 3}
# How an order moves on the next day; cancelled and returned orders are final.
NEXT_STATUS = {
    "pending": ("shipped", "cancelled"),
    "shipped": ("completed", "returned"),
    "completed": ("returned",),
}

BAD_DATES = ["2025-13-45", "not a date", "2025-02-30", "2024-00-10"]
BAD_TIMESTAMPS = ["2025-13-45 10:00:00", "not a date", "2025-02-30 08:15:00", "2025-06-01 25:61:00"]
BAD_DECIMALS = ["12,5x", "abc", "1.2.3", "ten", "--5"]
BAD_INTEGERS = ["abc", "ten", "3x", "--2"]

# Characters NFKD does not decompose to ASCII, for deriving e-mail addresses from names.
_ASCII_FALLBACK = str.maketrans(
    {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "đ": "d"}
)
_KEY_PATTERN = re.compile(r"^[CPT](\d+)$")


def _email_slug(name: str) -> str:
    """Lower-case ASCII form of a name, fit for the local part of an e-mail address."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_ASCII_FALLBACK))
    ascii_only = decomposed.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9-]", "", ascii_only)


_TABLE_SIZE = 100


def _weighted_table(percentages: dict[Any, int]) -> list[Any]:
    """100 entries, each value as often as its percentage: one random index picks by weight."""
    table = [value for value, weight in percentages.items() for _ in range(weight)]
    if len(table) != _TABLE_SIZE:
        raise ValueError(f"weights must add up to {_TABLE_SIZE}: {percentages}")
    return table


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _discount_text(percent: int) -> str:
    return f"0.{percent:02d}"


def _line_total_cents(quantity: int, price_cents: int, discount_percent: int) -> int:
    """round(quantity * unit_price * (1 - discount), 2), half away from zero, in cents.

    Integer arithmetic on hundredths of a cent is exact, so this equals the Decimal
    ROUND_HALF_UP result without Decimal's cost on a million rows.
    """
    hundredths = quantity * price_cents * (100 - discount_percent)
    if hundredths >= 0:
        return (hundredths + 50) // 100
    return -((-hundredths + 50) // 100)


@lru_cache(maxsize=1)
def _day_texts() -> list[str]:
    """ISO dates indexed by days before the reference date (index 0 is the reference date)."""
    return [(REFERENCE_DATE - timedelta(days=back)).isoformat() for back in range(4 * 365)]


@lru_cache(maxsize=1)
def _time_texts() -> list[str]:
    """HH:MM:SS for every second of a day, so timestamps cost one list lookup."""
    return [f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}" for s in range(86_400)]


def customer_id(number: int) -> str:
    """The business key of customer ``number``: C000001, C000002, …"""
    return f"C{number:06d}"


def product_id(number: int) -> str:
    """The business key of product ``number``: P00001, P00002, …"""
    return f"P{number:05d}"


def transaction_id(number: int) -> str:
    """The business key of transaction ``number``: T00000001, T00000002, …"""
    return f"T{number:08d}"


def normalize_key(raw: str) -> str:
    """A business key as the loader compares it: surrounding spaces dropped, upper case."""
    return raw.strip().upper()


def _key_number(raw: str) -> int | None:
    match = _KEY_PATTERN.match(normalize_key(raw))
    return int(match.group(1)) if match else None


_MASK64 = (1 << 64) - 1


@lru_cache(maxsize=16)
def _salt(seed: int, purpose: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _stable_fraction(seed: int, purpose: str, id_number: int) -> float:
    """A number in [0, 1) fixed by seed, purpose and id: picks rows without holding them.

    splitmix64 of the id's number: a well-mixed hash cheap enough for a million rows.
    """
    z = (id_number + _salt(seed, purpose)) * 0x9E3779B97F4A7C15 & _MASK64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
    return (z ^ (z >> 31)) / 2**64


def _rows_per_defect(rows: int, kinds: tuple[str, ...], dirty_rate: float) -> int:
    if dirty_rate <= 0 or rows < MIN_ROWS_FOR_DIRTY:
        return 0
    return max(1, round(rows * dirty_rate / len(kinds)))


def _plan_defects(
    rng: random.Random, rows: int, kinds: tuple[str, ...], dirty_rate: float
) -> dict[int, tuple[str, int]]:
    """Which data row (0-based) gets which defect; paired defects get two rows, source first."""
    per_kind = _rows_per_defect(rows, kinds, dirty_rate)
    paired_kinds = (DUPLICATE_ROW, DUPLICATE_KEY)
    singles = [kind for kind in kinds if kind not in paired_kinds for _ in range(per_kind)]
    pairs = [kind for kind in kinds if kind in paired_kinds for _ in range(per_kind)]
    positions = rng.sample(range(rows), len(singles) + 2 * len(pairs))
    plan: dict[int, tuple[str, int]] = {}
    for position, kind in zip(positions, singles, strict=False):
        plan[position] = (kind, -1)
    paired_positions = positions[len(singles) :]
    for event, kind in enumerate(pairs):
        first, second = sorted(paired_positions[2 * event : 2 * event + 2])
        # The earlier row loses to the later copy or re-keyed row, so the earlier is the dirty one.
        if kind == DUPLICATE_ROW:
            plan[first], plan[second] = (DUPLICATE_ROW, event), (_LATER_COPY, event)
        else:
            plan[first], plan[second] = (DUPLICATE_KEY, event), (_KEY_VARIANT, event)
    return plan


def _key_variant(rng: random.Random, key: str) -> str:
    """The same key as the loader sees it, written differently (case, surrounding spaces)."""
    return rng.choice([f" {key.lower()} ", key.lower(), f" {key} ", f"{key}  "])


def _malformed(rng: random.Random, row: list[str]) -> list[str]:
    """The row with a field missing or one too many."""
    return row[:-1] if rng.random() < 0.5 else [*row, "unexpected"]


class _DirtyLog:
    """Collects manifest entries and per-kind counts while a file is written."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, file_name: str, line: int, kind: str, key: str | None) -> None:
        self.entries.append({"file": file_name, "line": line, "kind": kind, "key": key})

    def counts(self, file_name: str, rows: int) -> dict[str, Any]:
        kinds = Counter(entry["kind"] for entry in self.entries if entry["file"] == file_name)
        return {"rows": rows, "dirty": sum(kinds.values()), "kinds": dict(sorted(kinds.items()))}


def _write_planned_rows(
    path: Path,
    columns: list[str],
    rows: int,
    plan: dict[int, tuple[str, int]],
    make_row: Callable[[int, bool], list[str]],
    corrupt: Callable[[str, list[str]], tuple[list[str], str | None]],
    vary_key: Callable[[list[str]], list[str]],
    dirty: _DirtyLog,
    clean_rows_need_quoting: bool = True,
) -> None:
    """Write ``rows`` data rows, following ``plan`` for the dirty ones.

    ``make_row(number, loadable)`` builds the clean row of entity ``number`` (numbers increase by
    one per new entity; ``loadable`` is false when the row is about to be broken, so nothing may
    reference it); ``corrupt(kind, row)`` breaks a fresh row in one way and returns the key as
    written; ``vary_key(row)`` re-keys a row and changes its payload for duplicate_key pairs.
    When clean rows never hold a comma, quote or line break, they are joined directly: the same
    bytes as the csv writer, at a third of its cost on the million-row path.
    """
    held: dict[int, list[str]] = {}
    number = 0
    with _open_for_replace(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        write = writer.writerow
        write_text = handle.write
        for position in range(rows):
            action = plan.get(position)
            if action is None:
                number += 1
                if clean_rows_need_quoting:
                    write(make_row(number, True))
                else:
                    write_text(",".join(make_row(number, True)) + "\n")
                continue
            kind, event = action
            line = position + 2  # the header is line 1
            if kind in (DUPLICATE_ROW, DUPLICATE_KEY):
                number += 1
                # The earlier row of a pair is still loadable: its later copy or variant wins.
                row = make_row(number, True)
                held[event] = row
                write(row)
                dirty.add(path.name, line, kind, row[0])
            elif kind == _LATER_COPY:
                write(held.pop(event))
            elif kind == _KEY_VARIANT:
                write(vary_key(held.pop(event)))
            else:
                number += 1
                row, key = corrupt(kind, make_row(number, False))
                write(row)
                dirty.add(path.name, line, kind, key)


class _CustomerFactory:
    """Builds customer rows and remembers which customers a transaction may reference."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.first_names = [(name, _email_slug(name)) for name in FIRST_NAMES]
        self.last_names = [(name, _email_slug(name)) for name in LAST_NAMES]
        self.segments = _weighted_table(dict(zip(SEGMENTS, SEGMENT_WEIGHTS, strict=True)))
        self.days = _day_texts()
        # Loadable customers and their signup day (days before the reference date).
        self.valid_ids: list[str] = []
        self.valid_signup_days_back: list[int] = []

    def phone(self, prefix: str) -> str:
        rng = self.rng
        area, exchange, line = (
            rng.randrange(200, 1000),
            rng.randrange(100, 1000),
            rng.randrange(10_000),
        )
        return f"{prefix} {area} {exchange} {line:04d}"

    def email(self, first_slug: str, last_slug: str, number: int) -> str:
        return f"{first_slug}.{last_slug}{number}@{self.rng.choice(EMAIL_DOMAINS)}"

    def make_row(self, number: int, loadable: bool) -> list[str]:
        rng = self.rng
        first, first_slug = rng.choice(self.first_names)
        last, last_slug = rng.choice(self.last_names)
        city, state, country, prefix = rng.choice(LOCATIONS)
        days_back = rng.randint(1, SIGNUP_WINDOW_DAYS)
        row = [
            customer_id(number),
            first,
            last,
            self.email(first_slug, last_slug, number),
            self.phone(prefix),
            city,
            state,
            country,
            self.days[days_back],
            self.segments[int(rng.random() * len(self.segments))],
        ]
        if loadable:
            self.valid_ids.append(row[0])
            self.valid_signup_days_back.append(days_back)
        return row

    def corrupt(self, kind: str, row: list[str]) -> tuple[list[str], str | None]:
        rng = self.rng
        if kind == MISSING_KEY:
            row[0] = rng.choice(["", "   "])
            return row, None
        if kind == INVALID_DATE:
            row[8] = rng.choice(BAD_DATES)
        elif kind == MALFORMED_ROW:
            row = _malformed(rng, row)
        return row, row[0]

    def vary_key(self, row: list[str]) -> list[str]:
        prefix = next(location[3] for location in LOCATIONS if location[0] == row[5])
        phone = self.phone(prefix)
        while phone == row[4]:
            phone = self.phone(prefix)
        return [_key_variant(self.rng, row[0]), *row[1:4], phone, *row[5:]]


class _ProductFactory:
    """Builds product rows and remembers the price of each product a transaction may use."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.categories = list(CATEGORIES.items())
        self.valid_ids: list[str] = []
        self.valid_price_cents: list[int] = []

    def make_row(self, number: int, loadable: bool) -> list[str]:
        rng = self.rng
        category, (low, high, nouns) = rng.choice(self.categories)
        price = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        # Cost is 40–80 % of the price, chosen in whole cents so the bound holds exactly.
        cost = rng.randint(-(-2 * price // 5), 4 * price // 5)
        brand = rng.choice(BRANDS)
        name = f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(nouns)}"
        if loadable:
            self.valid_ids.append(product_id(number))
            self.valid_price_cents.append(price)
        return [product_id(number), name, category, brand, _money(price), _money(cost)]

    def corrupt(self, kind: str, row: list[str]) -> tuple[list[str], str | None]:
        rng = self.rng
        if kind == MISSING_KEY:
            row[0] = rng.choice(["", "   "])
            return row, None
        if kind == INVALID_NUMBER:
            row[rng.choice([4, 5])] = rng.choice(BAD_DECIMALS)
        elif kind == MALFORMED_ROW:
            row = _malformed(rng, row)
        return row, row[0]

    def vary_key(self, row: list[str]) -> list[str]:
        return [_key_variant(self.rng, row[0]), f"{row[1]} (new packaging)", *row[2:]]


class _TransactionFactory:
    """Builds transaction rows that reference loadable customers and products only."""

    def __init__(
        self,
        rng: random.Random,
        customers: _CustomerFactory,
        products: _ProductFactory,
        customer_count: int,
        product_count: int,
    ) -> None:
        self.rng = rng
        self.random = rng.random
        self.customer_ids = customers.valid_ids
        # An order never predates its customer's signup, nor the one-year window.
        self.latest_days_back = [
            min(days_back, TRANSACTION_WINDOW_DAYS)
            for days_back in customers.valid_signup_days_back
        ]
        self.product_ids = products.valid_ids
        self.price_cents = products.valid_price_cents
        self.price_texts = [_money(cents) for cents in self.price_cents]
        self.customer_count = len(self.customer_ids)
        self.product_count = len(self.product_ids)
        # A tenth of the customers place a third of the orders, as loyal customers do.
        self.loyal_count = max(1, self.customer_count // 10)
        self.quantities = _weighted_table(QUANTITY_WEIGHTS)
        self.quantity_texts = {quantity: str(quantity) for quantity in QUANTITY_WEIGHTS}
        self.discounts = _weighted_table(DISCOUNT_WEIGHTS)
        self.discount_texts = {percent: _discount_text(percent) for percent in DISCOUNT_WEIGHTS}
        self.payments = _weighted_table(PAYMENT_WEIGHTS)
        self.statuses = _weighted_table(STATUS_WEIGHTS)
        self.days = _day_texts()
        self.times = _time_texts()
        # Ids nobody delivers, beyond any id this data set or its next day's new customers
        # use (the next day brings some of them: see _arriving_late).
        self.unknown_customer_base = max(990_000, 2 * customer_count + 1_000)
        self.unknown_product_base = max(99_000, 2 * product_count + 1_000)

    def make_row(self, number: int, loadable: bool) -> list[str]:
        # The hot loop of the generator: table lookups instead of weighted choices and
        # formatting, since a million rows go through here.
        random_ = self.random
        if random_() < 0.33:
            index = int(random_() * self.loyal_count)
        else:
            index = int(random_() * self.customer_count)
        # Popular products sell more: the square pulls picks towards the start of the list.
        product_index = int(random_() ** 2 * self.product_count)
        quantity = self.quantities[int(random_() * _TABLE_SIZE)]
        discount = self.discounts[int(random_() * _TABLE_SIZE)]
        total = _line_total_cents(quantity, self.price_cents[product_index], discount)
        days_back = 1 + int(random_() * self.latest_days_back[index])
        return [
            f"T{number:08d}",
            self.customer_ids[index],
            self.product_ids[product_index],
            self.quantity_texts[quantity],
            self.price_texts[product_index],
            self.discount_texts[discount],
            f"{total // 100}.{total % 100:02d}",
            f"{self.days[days_back]} {self.times[int(random_() * 86_400)]}",
            self.payments[int(random_() * _TABLE_SIZE)],
            self.statuses[int(random_() * _TABLE_SIZE)],
        ]

    def corrupt(self, kind: str, row: list[str]) -> tuple[list[str], str | None]:
        rng = self.rng
        if kind == MISSING_KEY:
            row[0] = rng.choice(["", "   "])
            return row, None
        if kind == INVALID_DATE:
            row[7] = rng.choice(BAD_TIMESTAMPS)
        elif kind == INVALID_NUMBER:
            column = rng.choice([3, 4, 5, 6])
            row[column] = rng.choice(BAD_INTEGERS if column == 3 else BAD_DECIMALS)
        elif kind == NEGATIVE_QUANTITY:
            quantity = rng.choice([0, -1, -2, -5])
            total = Decimal(quantity) * Decimal(row[4]) * (1 - Decimal(row[5]))
            row[3] = str(quantity)
            row[6] = str(total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
        elif kind == UNKNOWN_CUSTOMER:
            row[1] = customer_id(self.unknown_customer_base + rng.randrange(9_000))
        elif kind == UNKNOWN_PRODUCT:
            row[2] = product_id(self.unknown_product_base + rng.randrange(900))
        elif kind == MALFORMED_ROW:
            row = _malformed(rng, row)
        return row, row[0]

    def vary_key(self, row: list[str]) -> list[str]:
        status = self.rng.choice([s for s in STATUS_WEIGHTS if s != row[9]])
        return [_key_variant(self.rng, row[0]), *row[1:9], status]


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UserFacingError(f"The number of {name} must be at least 1, got {value}.")


def dataset_complete(directory: Path, next_day: bool = False) -> bool:
    """Whether ``directory`` holds every file of a day-1 (or next-day) data set, each whole."""
    names = NEXT_DAY_FILES if next_day else DATASET_FILES
    return all((Path(directory) / name).is_file() for name in names)


@contextmanager
def _open_for_replace(path: Path) -> Iterator[TextIO]:
    """A text file written under a temporary name beside ``path``, renamed to it once complete.

    An interrupted write removes its temporary file; after a kill, the next run overwrites it.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            # On disk before the rename, so a power cut cannot leave an empty final file either.
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _start_dataset(out: Path) -> None:
    """Create ``out`` and drop an earlier manifest, which this run writes last: until then the
    folder is incomplete, so a run cut short cannot pass for the data set it was replacing.

    Refuses a folder holding source files the generator did not write (a user's own, say in
    C360_DATA_DIR): they would be overwritten. A generated folder is marked from the start, so
    a run cut short can be repeated.
    """
    marked = (out / GENERATED_MARKER).is_file() or (out / MANIFEST_FILE).is_file()
    foreign = [name for name in SOURCE_FILES if (out / name).exists()]
    if foreign and not marked:
        raise UserFacingError(
            f"{out} holds {', '.join(foreign)}, which the generator did not write: generating"
            " there would overwrite them. Choose another folder (--out, or C360_DATA_DIR)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / GENERATED_MARKER).write_text(
        "Written by `c360 generate`; it may overwrite the files in this folder.\n",
        encoding="utf-8",
    )
    (out / MANIFEST_FILE).unlink(missing_ok=True)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    with _open_for_replace(path) as handle:
        json.dump(document, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def _write_manifest(path: Path, summary: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """The manifest as indented JSON, with one line per dirty row so that it stays readable."""
    head = json.dumps(summary, indent=2, ensure_ascii=False).removesuffix("\n}")
    rows = ",\n".join("    " + json.dumps(entry, ensure_ascii=False) for entry in entries)
    rows_block = f"[\n{rows}\n  ]" if entries else "[]"
    with _open_for_replace(path) as handle:
        handle.write(f'{head},\n  "dirty_rows": {rows_block}\n}}\n')


def generate_dataset(
    out_dir: Path | str,
    customers: int = DEFAULT_CUSTOMERS,
    products: int = DEFAULT_PRODUCTS,
    transactions: int = DEFAULT_TRANSACTIONS,
    seed: int = DEFAULT_SEED,
    dirty_rate: float = DEFAULT_DIRTY_RATE,
) -> dict[str, Any]:
    """Write the three canonical CSV files and ``dirty_rows.json`` into ``out_dir``.

    Each file has exactly the requested number of data rows; about ``dirty_rate`` of them are
    broken in exactly one way and listed in the manifest. Returns the manifest's summary:
    ``{"out_dir", "seed", "reference_date", "counts": {file: {"rows", "dirty", "kinds"}}}``.
    """
    for name, value in (
        ("customers", customers),
        ("products", products),
        ("transactions", transactions),
    ):
        _check_positive(name, value)
    if not 0 <= dirty_rate <= MAX_DIRTY_RATE:
        raise UserFacingError(f"The dirty-row rate must be between 0 and {MAX_DIRTY_RATE}.")
    out = Path(out_dir)
    _start_dataset(out)
    # One stream per file, so the size of one file does not shift the contents of the next.
    customer_rng = random.Random(f"{seed}:customers")
    product_rng = random.Random(f"{seed}:products")
    transaction_rng = random.Random(f"{seed}:transactions")
    dirty = _DirtyLog()

    customer_factory = _CustomerFactory(customer_rng)
    _write_planned_rows(
        out / CUSTOMERS_FILE,
        CUSTOMER_COLUMNS,
        customers,
        _plan_defects(customer_rng, customers, CUSTOMER_DEFECTS, dirty_rate),
        customer_factory.make_row,
        customer_factory.corrupt,
        customer_factory.vary_key,
        dirty,
    )
    product_factory = _ProductFactory(product_rng)
    _write_planned_rows(
        out / PRODUCTS_FILE,
        PRODUCT_COLUMNS,
        products,
        _plan_defects(product_rng, products, PRODUCT_DEFECTS, dirty_rate),
        product_factory.make_row,
        product_factory.corrupt,
        product_factory.vary_key,
        dirty,
    )
    transaction_factory = _TransactionFactory(
        transaction_rng, customer_factory, product_factory, customers, products
    )
    _write_planned_rows(
        out / TRANSACTIONS_FILE,
        TRANSACTION_COLUMNS,
        transactions,
        _plan_defects(transaction_rng, transactions, TRANSACTION_DEFECTS, dirty_rate),
        transaction_factory.make_row,
        transaction_factory.corrupt,
        transaction_factory.vary_key,
        dirty,
        clean_rows_need_quoting=False,
    )

    counts = {
        CUSTOMERS_FILE: dirty.counts(CUSTOMERS_FILE, customers),
        PRODUCTS_FILE: dirty.counts(PRODUCTS_FILE, products),
        TRANSACTIONS_FILE: dirty.counts(TRANSACTIONS_FILE, transactions),
    }
    summary = {"seed": seed, "reference_date": REFERENCE_DATE.isoformat(), "counts": counts}
    _write_manifest(out / MANIFEST_FILE, summary, dirty.entries)
    return {
        "out_dir": str(out),
        "seed": seed,
        "reference_date": REFERENCE_DATE.isoformat(),
        "counts": counts,
    }


def read_manifest(data_dir: Path | str) -> dict[str, Any]:
    """The ``dirty_rows.json`` of a generated data set."""
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise UserFacingError(
            f"{path} not found: generate the base data set first with `c360 generate`."
        )
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(physical line number, fields) of each data row, streamed."""
    if not path.is_file():
        raise UserFacingError(
            f"{path} not found: generate the base data set first with `c360 generate`."
        )
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            yield reader.line_num, row


def _dirty_lines(manifest: dict[str, Any], file_name: str) -> set[int]:
    return {entry["line"] for entry in manifest["dirty_rows"] if entry["file"] == file_name}


def _keys_with_defects(manifest: dict[str, Any], file_name: str) -> set[str]:
    """Normalised keys touched by any dirty row: their rows must stay exactly as they were."""
    return {
        normalize_key(entry["key"])
        for entry in manifest["dirty_rows"]
        if entry["file"] == file_name and entry["key"] is not None
    }


def _cents(text: str) -> int:
    return int(Decimal(text) * 100)


def _arriving_late(
    base: Path, manifest: dict[str, Any], seed: int, rate: float
) -> tuple[dict[str, str], dict[str, int]]:
    """Of the customers and products day-1 orders named before anybody had delivered them
    (those orders loaded against the ghost record), the share ``rate`` that the next day's
    snapshots bring, by normalised id in sorted order: each customer with the day of its
    earliest order (its signup day can be no later), each product with the lowest price its
    orders paid (its price, so that its cost stays below what every order paid)."""
    kinds = {
        entry["line"]: entry["kind"]
        for entry in manifest["dirty_rows"]
        if entry["file"] == TRANSACTIONS_FILE
        and entry["kind"] in (UNKNOWN_CUSTOMER, UNKNOWN_PRODUCT)
    }
    first_order_day: dict[str, str] = {}
    lowest_price: dict[str, int] = {}
    last_line = max(kinds, default=0)
    for line, row in _read_rows(base / TRANSACTIONS_FILE):
        if line > last_line:
            break
        kind = kinds.get(line)
        if kind == UNKNOWN_CUSTOMER:
            key, day = normalize_key(row[1]), row[7][:10]
            first_order_day[key] = min(day, first_order_day.get(key, day))
        elif kind == UNKNOWN_PRODUCT:
            key, price = normalize_key(row[2]), _cents(row[4])
            lowest_price[key] = min(price, lowest_price.get(key, price))

    def arriving(named: dict, kind: str) -> dict:
        return {
            key: named[key]
            for key in sorted(named)
            if _stable_fraction(seed, f"late-{kind}", int(key[1:])) < rate
        }

    return arriving(first_order_day, UNKNOWN_CUSTOMER), arriving(lowest_price, UNKNOWN_PRODUCT)


def _write_customer_snapshot(
    base: Path,
    out: Path,
    manifest: dict[str, Any],
    rng: random.Random,
    seed: int,
    change_rate: float,
    new_rate: float,
    late: dict[str, str],
) -> tuple[list[str], list[str], list[str], int]:
    """Day-1 customers with a few changed, then new ones, then the ``late`` ones (id -> day
    of their first order, their signup day); returns the changed, new and loadable day-1 ids
    and the row count."""
    dirty_lines = _dirty_lines(manifest, CUSTOMERS_FILE)
    frozen_keys = _keys_with_defects(manifest, CUSTOMERS_FILE)
    factory = _CustomerFactory(rng)
    changed: list[str] = []
    loadable: list[str] = []
    highest = 0
    rows = 0
    with _open_for_replace(out / CUSTOMERS_FILE) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CUSTOMER_COLUMNS)
        for line, row in _read_rows(base / CUSTOMERS_FILE):
            rows += 1
            highest = max(highest, (_key_number(row[0]) if row else None) or 0)
            if line in dirty_lines:
                writer.writerow(row)
                continue
            key = normalize_key(row[0])
            loadable.append(key)
            pick = _stable_fraction(seed, "customer-change", int(key[1:]))
            if key in frozen_keys or pick >= change_rate:
                writer.writerow(row)
                continue
            # Which of city, segment, e-mail change comes from the same draw, so at least one does.
            what = 1 + int(pick / change_rate * 7)
            if what & 1:
                city, state, country, _ = rng.choice([loc for loc in LOCATIONS if loc[0] != row[5]])
                row[5:8] = [city, state, country]
            if what & 2:
                row[9] = rng.choice([segment for segment in SEGMENTS if segment != row[9]])
            if what & 4:
                # No dot between the names, unlike day-1 addresses, so the new one is unique.
                first, last = _email_slug(row[1]), _email_slug(row[2])
                row[3] = f"{first[:1]}{last}{int(key[1:])}@{rng.choice(EMAIL_DOMAINS)}"
            changed.append(key)
            writer.writerow(row)
        new_ids: list[str] = []
        for offset in range(1, round(rows * new_rate) + 1):
            row = factory.make_row(highest + offset, False)
            row[8] = REFERENCE_DATE.isoformat()
            new_ids.append(row[0])
            writer.writerow(row)
        for key, first_order_day in late.items():
            row = factory.make_row(int(key[1:]), False)
            row[8] = first_order_day
            writer.writerow(row)
    return changed, new_ids, loadable, rows + len(new_ids) + len(late)


def _write_product_snapshot(
    base: Path,
    out: Path,
    manifest: dict[str, Any],
    rng: random.Random,
    seed: int,
    change_rate: float,
    late: dict[str, int],
) -> tuple[list[str], list[tuple[str, int]], int]:
    """Day-1 products with a few new prices, then the ``late`` ones (id -> price in cents,
    cost 40–80 % of it); returns changed ids, (id, price) of the day-1 products to sell, and
    the row count."""
    dirty_lines = _dirty_lines(manifest, PRODUCTS_FILE)
    frozen_keys = _keys_with_defects(manifest, PRODUCTS_FILE)
    changed: list[str] = []
    sellable: list[tuple[str, int]] = []
    rows = 0
    with _open_for_replace(out / PRODUCTS_FILE) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PRODUCT_COLUMNS)
        for line, row in _read_rows(base / PRODUCTS_FILE):
            rows += 1
            if line in dirty_lines:
                writer.writerow(row)
                continue
            key = normalize_key(row[0])
            price, cost = _cents(row[4]), _cents(row[5])
            if (
                key not in frozen_keys
                and _stable_fraction(seed, "price", int(key[1:])) < change_rate
            ):
                factor = rng.choice([rng.uniform(0.80, 0.95), rng.uniform(1.05, 1.25)])
                new_price = min(200_000, max(100, round(price * factor)))
                if new_price == price:
                    new_price = price + 1 if price < 200_000 else price - 1
                # Cost moves with the price, kept inside 40–80 % of it.
                new_cost = round(cost * new_price / price)
                new_cost = min(4 * new_price // 5, max(-(-2 * new_price // 5), new_cost))
                row[4], row[5] = _money(new_price), _money(new_cost)
                price = new_price
                changed.append(key)
            sellable.append((key, price))
            writer.writerow(row)
        factory = _ProductFactory(rng)
        for key, price in late.items():
            row = factory.make_row(int(key[1:]), False)
            cost = rng.randint(-(-2 * price // 5), 4 * price // 5)
            row[4], row[5] = _money(price), _money(cost)
            writer.writerow(row)
    return changed, sellable, rows + len(late)


def generate_next_day(
    base_dir: Path | str,
    out_dir: Path | str,
    seed: int = DEFAULT_SEED,
    customer_change_rate: float = 0.02,
    new_customer_rate: float = 0.01,
    product_change_rate: float = 0.03,
    order_change_rate: float = 0.02,
    new_order_rate: float = 0.05,
    late_arrival_rate: float = 0.5,
) -> dict[str, Any]:
    """Write the delivery of the day after ``base_dir``'s data set into ``out_dir``.

    customers.csv and products.csv are full snapshots: day-1 rows in the same order (dirty rows
    untouched) with some clean ones changed, new customers appended, and then, arriving late,
    about ``late_arrival_rate`` of the customers and products that day-1 orders named before
    anybody had delivered them (the loader links those orders to them without the orders being
    delivered again). transactions.csv holds day-1 orders re-delivered with a new status plus
    new orders, all clean. ``changes.json`` lists changed_customer_ids, new_customer_ids,
    late_customer_ids, changed_product_ids, late_product_ids, changed_order_ids and
    new_order_ids; ``dirty_rows.json`` carries the day-1 entries that are still in the files.
    Returns ``{"out_dir", "seed", "counts": {file: rows}, "changes": {list name: length}}``.
    """
    base, out = Path(base_dir), Path(out_dir)
    if base.resolve() == out.resolve():
        raise UserFacingError("The next-day output directory must differ from the base directory.")
    manifest = read_manifest(base)
    _start_dataset(out)
    rng = random.Random(f"{seed}:next-day")
    late_customers, late_products = _arriving_late(base, manifest, seed, late_arrival_rate)

    changed_customers, new_customers, loadable_customers, customer_rows = _write_customer_snapshot(
        base, out, manifest, rng, seed, customer_change_rate, new_customer_rate, late_customers
    )
    changed_products, sellable, product_rows = _write_product_snapshot(
        base, out, manifest, rng, seed, product_change_rate, late_products
    )
    if not loadable_customers or not sellable:
        raise UserFacingError(f"{base} holds no clean customers or products to build on.")

    dirty_lines = _dirty_lines(manifest, TRANSACTIONS_FILE)
    frozen_keys = _keys_with_defects(manifest, TRANSACTIONS_FILE)
    changed_orders: list[str] = []
    new_orders: list[str] = []
    day1_rows = 0
    highest = 0
    times = _time_texts()
    payments = _weighted_table(PAYMENT_WEIGHTS)
    quantities = _weighted_table(QUANTITY_WEIGHTS)
    discounts = _weighted_table(DISCOUNT_WEIGHTS)
    today = REFERENCE_DATE.isoformat()
    with _open_for_replace(out / TRANSACTIONS_FILE) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRANSACTION_COLUMNS)
        for line, row in _read_rows(base / TRANSACTIONS_FILE):
            day1_rows += 1
            if line in dirty_lines:
                highest = max(highest, (_key_number(row[0]) if row else None) or 0)
                continue
            key = row[0].strip().upper()
            number = int(key[1:])
            highest = max(highest, number)
            if (
                row[9] in NEXT_STATUS
                and key not in frozen_keys
                and _stable_fraction(seed, "order-status", number) < order_change_rate
            ):
                row[0] = key
                row[9] = rng.choice(NEXT_STATUS[row[9]])
                changed_orders.append(key)
                writer.writerow(row)
        for offset in range(1, round(day1_rows * new_order_rate) + 1):
            if new_customers and rng.random() < 0.1:
                customer = rng.choice(new_customers)
            else:
                customer = loadable_customers[int(rng.random() * len(loadable_customers))]
            product, price = sellable[int(rng.random() ** 2 * len(sellable))]
            quantity = quantities[int(rng.random() * len(quantities))]
            discount = discounts[int(rng.random() * len(discounts))]
            order = transaction_id(highest + offset)
            writer.writerow(
                [
                    order,
                    customer,
                    product,
                    str(quantity),
                    _money(price),
                    _discount_text(discount),
                    _money(_line_total_cents(quantity, price, discount)),
                    f"{today} {times[int(rng.random() * 86_400)]}",
                    payments[int(rng.random() * len(payments))],
                    # Orders placed today have not been delivered yet.
                    rng.choice(["pending", "pending", "shipped", "completed"]),
                ]
            )
            new_orders.append(order)

    changes = {
        "changed_customer_ids": changed_customers,
        "new_customer_ids": new_customers,
        "late_customer_ids": list(late_customers),
        "changed_product_ids": changed_products,
        "late_product_ids": list(late_products),
        "changed_order_ids": changed_orders,
        "new_order_ids": new_orders,
    }
    _write_json(out / CHANGES_FILE, changes)
    kept_entries = [e for e in manifest["dirty_rows"] if e["file"] != TRANSACTIONS_FILE]
    carried = _DirtyLog()
    carried.entries = kept_entries
    transaction_rows = len(changed_orders) + len(new_orders)
    counts = {
        CUSTOMERS_FILE: carried.counts(CUSTOMERS_FILE, customer_rows),
        PRODUCTS_FILE: carried.counts(PRODUCTS_FILE, product_rows),
        TRANSACTIONS_FILE: carried.counts(TRANSACTIONS_FILE, transaction_rows),
    }
    summary = {"seed": seed, "reference_date": REFERENCE_DATE.isoformat(), "counts": counts}
    _write_manifest(out / MANIFEST_FILE, summary, kept_entries)
    return {
        "out_dir": str(out),
        "seed": seed,
        "counts": {name: file_counts["rows"] for name, file_counts in counts.items()},
        "changes": {name: len(ids) for name, ids in changes.items()},
    }
