"""The sample-data generator: determinism, the canonical contract, the dirty-row manifest and
the next-day delivery, each checked by re-reading the CSV files independently."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from customer360 import generator
from customer360.errors import UserFacingError
from customer360.generator import generate_dataset, generate_next_day

SCALE = {"customers": 600, "products": 300, "transactions": 4000}
SEED = 7
REFERENCE = date(2026, 1, 1)
FILES = ("customers.csv", "products.csv", "transactions.csv")
# The file that marks a folder the generator writes into.
MARKER = ".generated-sample-data"
HEADERS = {
    "customers.csv": [
        "customer_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "city",
        "state",
        "country",
        "signup_date",
        "customer_segment",
    ],
    "products.csv": ["product_id", "product_name", "category", "brand", "unit_price", "cost"],
    "transactions.csv": [
        "transaction_id",
        "customer_id",
        "product_id",
        "quantity",
        "unit_price",
        "discount",
        "total_amount",
        "transaction_ts",
        "payment_method",
        "order_status",
    ],
}
SEGMENTS = {"Consumer", "Corporate", "Home Office", "Small Business"}
PAYMENTS = {"credit_card", "debit_card", "paypal", "bank_transfer", "gift_card"}
STATUSES = {"completed", "shipped", "pending", "cancelled", "returned"}
DISCOUNTS = {Decimal(text) for text in ("0", "0.05", "0.1", "0.15", "0.2")}
DECIMAL_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
INTEGER_TEXT = re.compile(r"^-?\d+$")


def norm(key: str) -> str:
    return key.strip().upper()


def read_lines(path: Path) -> list[tuple[int, str, list[str]]]:
    """(physical line, raw text, fields) per data row; fails if a record spans two lines."""
    text = path.read_text(encoding="utf-8")
    assert "\r" not in text and text.endswith("\n")
    raw_lines = text.split("\n")[:-1]
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == HEADERS[path.name]
        rows = []
        for index, fields in enumerate(reader):
            line = index + 2
            assert reader.line_num == line, "a record spans more than one physical line"
            rows.append((line, raw_lines[line - 1], fields))
    return rows


def is_date(text: str) -> bool:
    try:
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)) and bool(date.fromisoformat(text))
    except ValueError:
        return False


def is_timestamp(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


def find_defects(data_dir: Path) -> dict[tuple[str, int], set[str]]:
    """Every defect of every row, found from the files alone, keyed by (file, line)."""
    defects: dict[tuple[str, int], set[str]] = {}
    all_keys: dict[str, set[str]] = {}
    for file_name in FILES:
        rows = read_lines(data_dir / file_name)
        width = len(HEADERS[file_name])
        later_copies = Counter(raw for _, raw, _ in rows)
        last_raw_by_key: dict[str, str] = {}
        for _, raw, fields in rows:
            if len(fields) == width and fields[0].strip():
                last_raw_by_key[norm(fields[0])] = raw
        all_keys[file_name] = {norm(f[0]) for _, _, f in rows if f and f[0].strip()}
        for line, raw, fields in rows:
            found: set[str] = set()
            later_copies[raw] -= 1
            if later_copies[raw]:
                found.add("duplicate_row")
            if len(fields) != width:
                found.add("malformed_row")
            elif not fields[0].strip():
                found.add("missing_key")
            else:
                later = last_raw_by_key[norm(fields[0])]
                if later != raw:
                    found.add("duplicate_key")
                found |= field_defects(file_name, fields)
            defects[(file_name, line)] = found
    for line, _, fields in read_lines(data_dir / "transactions.csv"):
        if len(fields) == len(HEADERS["transactions.csv"]):
            if norm(fields[1]) not in all_keys["customers.csv"]:
                defects[("transactions.csv", line)].add("unknown_customer")
            if norm(fields[2]) not in all_keys["products.csv"]:
                defects[("transactions.csv", line)].add("unknown_product")
    return defects


def field_defects(file_name: str, fields: list[str]) -> set[str]:
    found = set()
    if file_name == "customers.csv" and not is_date(fields[8]):
        found.add("invalid_date")
    if file_name == "products.csv" and not all(DECIMAL_TEXT.match(v) for v in fields[4:6]):
        found.add("invalid_number")
    if file_name == "transactions.csv":
        if not is_timestamp(fields[7]):
            found.add("invalid_date")
        numbers_ok = INTEGER_TEXT.match(fields[3]) and all(
            DECIMAL_TEXT.match(v) for v in fields[4:7]
        )
        if not numbers_ok:
            found.add("invalid_number")
        elif int(fields[3]) <= 0:
            found.add("negative_quantity")
    return found


def file_digests(data_dir: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.iterdir())
        if path.is_file()
    }


def clean_rows(data_dir: Path, file_name: str) -> list[list[str]]:
    manifest = json.loads((data_dir / "dirty_rows.json").read_text(encoding="utf-8"))
    dirty = {e["line"] for e in manifest["dirty_rows"] if e["file"] == file_name}
    return [fields for line, _, fields in read_lines(data_dir / file_name) if line not in dirty]


@pytest.fixture(scope="module")
def day1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("day1")
    generate_dataset(out, seed=SEED, **SCALE)
    return out


@pytest.fixture(scope="module")
def day2(day1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("day2")
    generate_next_day(day1, out, seed=SEED)
    return out


def test_same_seed_gives_identical_bytes(day1: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path, seed=SEED, **SCALE)
    assert file_digests(tmp_path) == file_digests(day1)
    assert set(file_digests(day1)) == {*FILES, "dirty_rows.json", MARKER}


def test_different_seed_gives_different_data(day1: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path, seed=SEED + 1, **SCALE)
    other, ours = file_digests(tmp_path), file_digests(day1)
    assert all(other[name] != ours[name] for name in FILES)


def test_files_are_written_exactly_as_the_csv_module_writes_them(day1: Path) -> None:
    for file_name in FILES:
        text = (day1 / file_name).read_text(encoding="utf-8")
        rewritten = io.StringIO(newline="")
        csv.writer(rewritten, lineterminator="\n").writerows(csv.reader(io.StringIO(text)))
        assert rewritten.getvalue() == text


def test_files_have_the_requested_number_of_rows(day1: Path) -> None:
    for file_name, requested in zip(FILES, SCALE.values(), strict=True):
        assert len(read_lines(day1 / file_name)) == requested


def test_manifest_lists_exactly_the_rows_with_a_defect_each_with_one_defect(day1: Path) -> None:
    manifest = json.loads((day1 / "dirty_rows.json").read_text(encoding="utf-8"))
    listed = {(e["file"], e["line"]): e["kind"] for e in manifest["dirty_rows"]}
    assert len(listed) == len(manifest["dirty_rows"])
    defects = find_defects(day1)
    for position, kind in listed.items():
        assert defects[position] == {kind}, position
    unlisted = {position: found for position, found in defects.items() if position not in listed}
    assert all(not found for found in unlisted.values())


def test_manifest_keys_are_the_keys_as_written(day1: Path) -> None:
    manifest = json.loads((day1 / "dirty_rows.json").read_text(encoding="utf-8"))
    rows = {name: {line: f for line, _, f in read_lines(day1 / name)} for name in FILES}
    for entry in manifest["dirty_rows"]:
        fields = rows[entry["file"]][entry["line"]]
        expected = None if entry["kind"] == "missing_key" else fields[0]
        assert entry["key"] == expected


def test_every_kind_appears_and_about_one_percent_is_dirty(day1: Path) -> None:
    manifest = json.loads((day1 / "dirty_rows.json").read_text(encoding="utf-8"))
    kinds = {name: Counter() for name in FILES}
    for entry in manifest["dirty_rows"]:
        kinds[entry["file"]][entry["kind"]] += 1
    assert set(kinds["customers.csv"]) == {
        "missing_key",
        "duplicate_row",
        "duplicate_key",
        "invalid_date",
        "malformed_row",
    }
    assert set(kinds["products.csv"]) == {
        "missing_key",
        "duplicate_row",
        "duplicate_key",
        "invalid_number",
        "malformed_row",
    }
    assert len(kinds["transactions.csv"]) == 9
    for file_name, requested in zip(FILES, SCALE.values(), strict=True):
        counts = manifest["counts"][file_name]
        assert counts["rows"] == requested
        assert counts["kinds"] == dict(kinds[file_name])
        assert counts["dirty"] == sum(kinds[file_name].values())
        assert 0.005 * requested <= counts["dirty"] <= 0.02 * requested


def test_clean_customers_are_realistic(day1: Path) -> None:
    customers = clean_rows(day1, "customers.csv")
    emails_by_key = {norm(f[0]): f[3] for f in customers}
    assert len(set(emails_by_key.values())) == len(emails_by_key)
    assert any(not (f[1] + f[2]).isascii() for f in customers)
    locations = {}
    for fields in customers:
        assert re.fullmatch(r"C\d{6}", norm(fields[0]))
        assert re.fullmatch(r"[a-z0-9.-]+@[a-z.]+", fields[3])
        assert fields[9] in SEGMENTS
        signup = date.fromisoformat(fields[8])
        assert REFERENCE - timedelta(days=3 * 365) <= signup < REFERENCE
        # A city always comes with the same state and country.
        assert locations.setdefault(fields[5], tuple(fields[6:8])) == tuple(fields[6:8])


def test_clean_products_have_prices_and_costs_in_range(day1: Path) -> None:
    for fields in clean_rows(day1, "products.csv"):
        price, cost = Decimal(fields[4]), Decimal(fields[5])
        assert Decimal("1") <= price <= Decimal("2000")
        assert price * Decimal("0.4") <= cost <= price * Decimal("0.8")
        assert price.as_tuple().exponent == -2 and cost.as_tuple().exponent == -2


def test_clean_transactions_add_up_and_reference_loadable_rows(day1: Path) -> None:
    customers = {norm(f[0]): date.fromisoformat(f[8]) for f in clean_rows(day1, "customers.csv")}
    prices = {norm(f[0]): f[4] for f in clean_rows(day1, "products.csv")}
    transactions = clean_rows(day1, "transactions.csv")
    assert transactions
    for fields in transactions:
        quantity, price, discount = int(fields[3]), Decimal(fields[4]), Decimal(fields[5])
        expected = (quantity * price * (1 - discount)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert fields[6] == f"{expected:.2f}"
        assert 1 <= quantity <= 10 and discount in DISCOUNTS
        assert fields[4] == prices[norm(fields[2])]
        ts = datetime.strptime(fields[7], "%Y-%m-%d %H:%M:%S")
        start = datetime.combine(REFERENCE - timedelta(days=365), datetime.min.time())
        assert start <= ts < datetime.combine(REFERENCE, datetime.min.time())
        assert ts.date() >= customers[norm(fields[1])]
        assert fields[8] in PAYMENTS and fields[9] in STATUSES
    statuses = Counter(f[9] for f in transactions)
    assert statuses.most_common(1)[0][0] == "completed"


def test_next_day_changes_match_a_diff_of_the_customer_files(day1: Path, day2: Path) -> None:
    changes = json.loads((day2 / "changes.json").read_text(encoding="utf-8"))
    before = read_lines(day1 / "customers.csv")
    after = read_lines(day2 / "customers.csv")
    assert len(after) > len(before)
    pairs = list(zip(before, after[: len(before)], strict=True))
    changed = [norm(new[2][0]) for old, new in pairs if old[1] != new[1]]
    appended = [fields[0] for _, _, fields in after[len(before) :]]
    assert changes["changed_customer_ids"] == changed
    # New customers, then those arriving late (see the test of late arrivals).
    assert changes["new_customer_ids"] + changes["late_customer_ids"] == appended
    new = appended[: len(changes["new_customer_ids"])]
    assert 0.005 * len(before) <= len(changed) <= 0.04 * len(before)
    highest = max(int(norm(f[0])[1:]) for _, _, f in before if f and f[0].strip())
    assert [int(key[1:]) for key in new] == list(range(highest + 1, highest + 1 + len(new)))
    for old, new in pairs:
        if old[1] != new[1]:
            # Only city (with state and country), segment and e-mail change.
            assert old[2][:3] + [old[2][4], old[2][8]] == new[2][:3] + [new[2][4], new[2][8]]


def test_next_day_keeps_dirty_rows_and_adds_none(day1: Path, day2: Path) -> None:
    manifest = json.loads((day1 / "dirty_rows.json").read_text(encoding="utf-8"))
    for file_name in ("customers.csv", "products.csv"):
        before = {line: raw for line, raw, _ in read_lines(day1 / file_name)}
        after = {line: raw for line, raw, _ in read_lines(day2 / file_name)}
        for entry in manifest["dirty_rows"]:
            if entry["file"] == file_name:
                assert after[entry["line"]] == before[entry["line"]]
    day2_manifest = json.loads((day2 / "dirty_rows.json").read_text(encoding="utf-8"))
    listed = {(e["file"], e["line"]): e["kind"] for e in day2_manifest["dirty_rows"]}
    for position, found in find_defects(day2).items():
        assert found == ({listed[position]} if position in listed else set()), position
    assert not any(e["file"] == "transactions.csv" for e in day2_manifest["dirty_rows"])


def test_next_day_products_change_price_with_proportional_cost(day1: Path, day2: Path) -> None:
    changes = json.loads((day2 / "changes.json").read_text(encoding="utf-8"))
    before = read_lines(day1 / "products.csv")
    after = read_lines(day2 / "products.csv")
    pairs = list(zip(before, after[: len(before)], strict=True))
    changed = [norm(new[2][0]) for old, new in pairs if old[1] != new[1]]
    assert changes["changed_product_ids"] == changed
    assert changes["late_product_ids"] == [fields[0] for _, _, fields in after[len(before) :]]
    assert changed
    for old, new in pairs:
        if old[1] != new[1]:
            assert old[2][:4] == new[2][:4] and old[2][4] != new[2][4]
            price, cost = Decimal(new[2][4]), Decimal(new[2][5])
            assert price * Decimal("0.4") <= cost <= price * Decimal("0.8")


def test_next_day_brings_about_half_the_customers_and_products_orders_named_before(
    tmp_path: Path,
) -> None:
    """Customers and products day-1 orders named though no file had them arrive late."""
    # Larger than SCALE, for a few dozen of them.
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    generate_dataset(day1, seed=SEED, customers=2000, products=500, transactions=20_000)
    generate_next_day(day1, day2, seed=SEED)
    changes = json.loads((day2 / "changes.json").read_text(encoding="utf-8"))
    manifest = json.loads((day1 / "dirty_rows.json").read_text(encoding="utf-8"))
    rejected = {
        entry["line"]
        for entry in manifest["dirty_rows"]
        if entry["file"] == "transactions.csv"
        and entry["kind"] not in ("unknown_customer", "unknown_product")
    }
    orders = [f for line, _, f in read_lines(day1 / "transactions.csv") if line not in rejected]
    for file_name, column, listed in (
        ("customers.csv", 1, "late_customer_ids"),
        ("products.csv", 2, "late_product_ids"),
    ):
        delivered = {norm(fields[0]) for _, _, fields in read_lines(day1 / file_name) if fields}
        named_before = {norm(fields[column]) for fields in orders} - delivered
        arriving = {norm(fields[0]): fields for fields in clean_rows(day2, file_name)}
        late = set(arriving) & named_before
        assert sorted(late) == changes[listed]
        assert 0.2 * len(named_before) <= len(late) <= 0.8 * len(named_before), file_name
        # They fit the orders that named them: no order before its customer signed up, no
        # product costing more than an order paid for it.
        for fields in orders:
            key = norm(fields[column])
            if key not in late:
                continue
            if file_name == "customers.csv":
                assert arriving[key][8] <= fields[7][:10], (key, fields[0])
            else:
                assert Decimal(arriving[key][5]) <= Decimal(fields[4]), (key, fields[0])


def test_next_day_transactions_are_status_changes_and_new_orders(day1: Path, day2: Path) -> None:
    changes = json.loads((day2 / "changes.json").read_text(encoding="utf-8"))
    day1_orders = {norm(f[0]): f for f in clean_rows(day1, "transactions.csv")}
    customers = {norm(f[0]) for f in clean_rows(day2, "customers.csv")}
    prices = {norm(f[0]): f[4] for f in clean_rows(day2, "products.csv")}
    rows = [fields for _, _, fields in read_lines(day2 / "transactions.csv")]
    redelivered = [f for f in rows if f[0] in day1_orders]
    new = [f for f in rows if f[0] not in day1_orders]
    assert changes["changed_order_ids"] == [f[0] for f in redelivered]
    assert changes["new_order_ids"] == [f[0] for f in new]
    for fields in redelivered:
        old = day1_orders[fields[0]]
        assert fields[:9] == old[:9] and fields[9] != old[9]
    day1_keys = [norm(f[0]) for _, _, f in read_lines(day1 / "transactions.csv") if f]
    highest = max(int(key[1:]) for key in day1_keys if re.fullmatch(r"T\d+", key))
    assert [int(f[0][1:]) for f in new] == list(range(highest + 1, highest + 1 + len(new)))
    for fields in new:
        assert norm(fields[1]) in customers and fields[4] == prices[norm(fields[2])]
        quantity, price, discount = int(fields[3]), Decimal(fields[4]), Decimal(fields[5])
        expected = (quantity * price * (1 - discount)).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert fields[6] == f"{expected:.2f}"
        assert fields[7].startswith(REFERENCE.isoformat())
    assert {f[1] for f in new} & set(changes["new_customer_ids"])


def test_next_day_is_deterministic(day1: Path, day2: Path, tmp_path: Path) -> None:
    generate_next_day(day1, tmp_path, seed=SEED)
    assert file_digests(tmp_path) == file_digests(day2)
    assert set(file_digests(day2)) == {*FILES, "dirty_rows.json", "changes.json", MARKER}


def test_generated_sets_are_complete_and_leave_no_temporary_files(day1: Path, day2: Path) -> None:
    assert sorted(path.name for path in day1.iterdir()) == sorted(
        [*FILES, "dirty_rows.json", MARKER]
    )
    assert sorted(path.name for path in day2.iterdir()) == sorted(
        [*FILES, "dirty_rows.json", "changes.json", MARKER]
    )
    assert generator.dataset_complete(day1)
    assert generator.dataset_complete(day2, next_day=True)
    assert not generator.dataset_complete(day1, next_day=True)  # no changes.json


@pytest.mark.parametrize("missing", [*FILES, "dirty_rows.json", "changes.json"])
def test_a_set_with_a_file_missing_is_not_complete(
    day1: Path, day2: Path, tmp_path: Path, missing: str
) -> None:
    for source, next_day in ((day1, False), (day2, True)):
        copy = shutil.copytree(source, tmp_path / source.name)
        (copy / missing).unlink(missing_ok=True)
        expected = missing == "changes.json" and not next_day  # day 1 has no changes.json
        assert generator.dataset_complete(copy, next_day=next_day) is expected


def test_an_interrupted_generation_leaves_no_cut_off_file(
    day1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the transactions are written, over an earlier data set in the folder."""
    out = tmp_path / "set"
    generate_dataset(out, seed=SEED + 1, **SCALE)
    earlier = file_digests(out)
    make_row = generator._TransactionFactory.make_row
    rows_made = itertools.count(1)

    def interrupted_at_row_1000(factory, number: int, loadable: bool) -> list[str]:
        if next(rows_made) == 1000:
            raise KeyboardInterrupt
        return make_row(factory, number, loadable)

    monkeypatch.setattr(generator._TransactionFactory, "make_row", interrupted_at_row_1000)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, seed=SEED, **SCALE)

    now = file_digests(out)
    # Only whole files remain: this run's customers and products, the earlier transactions;
    # without this run's manifest the folder does not pass for a finished data set.
    assert sorted(path.name for path in out.iterdir()) == sorted([*FILES, MARKER])
    assert now["transactions.csv"] == earlier["transactions.csv"]
    assert now["customers.csv"] == file_digests(day1)["customers.csv"]
    assert now["products.csv"] == file_digests(day1)["products.csv"]
    assert not generator.dataset_complete(out)


def test_a_killed_generation_leaves_no_cut_off_file(day1: Path, tmp_path: Path) -> None:
    """A generator killed outright (SIGKILL) part-way through a large transactions file."""
    out = tmp_path / "set"
    sizes = {**SCALE, "transactions": 5_000_000}
    script = "import sys; from customer360.generator import generate_dataset; "
    script += f"generate_dataset(sys.argv[1], seed={SEED}, **{sizes!r})"
    package_root = Path(generator.__file__).parents[1]
    process = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=package_root)
    try:
        # Killed once a megabyte of transactions is on disk, long before the five million rows.
        deadline = time.monotonic() + 120
        while not any(
            "transactions.csv" in path.name and path.stat().st_size > 1_000_000
            for path in (out.iterdir() if out.exists() else ())
        ):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()

    assert not (out / "transactions.csv").exists()
    assert not (out / "dirty_rows.json").exists()
    assert not generator.dataset_complete(out)
    # The files finished before the kill are whole: the same sizes and seed give the same bytes.
    for name in ("customers.csv", "products.csv"):
        assert file_digests(out)[name] == file_digests(day1)[name]

    # The next run writes over what the killed one left behind.
    generate_dataset(out, seed=SEED, **SCALE)
    assert file_digests(out) == file_digests(day1)
    assert generator.dataset_complete(out)


def test_a_folder_of_a_users_own_files_is_not_written_over(day1: Path, tmp_path: Path) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    (own / "customers.csv").write_text("customer_id,first_name\nMY-1,Real\n", encoding="utf-8")
    (own / "transactions.csv").write_text("transaction_id\nMY-T1\n", encoding="utf-8")
    before = file_digests(own)

    with pytest.raises(UserFacingError, match="holds customers.csv, transactions.csv, which"):
        generate_dataset(own, seed=SEED, **SCALE)
    with pytest.raises(UserFacingError, match="the generator did not write"):
        generate_next_day(day1, own)

    assert file_digests(own) == before
    assert sorted(path.name for path in own.iterdir()) == ["customers.csv", "transactions.csv"]
