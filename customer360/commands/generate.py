"""``c360 generate``: write the sample data set, or the next day's delivery on top of one."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from customer360.errors import UserFacingError
from customer360.generator import (
    CUSTOMERS_FILE,
    DEFAULT_CUSTOMERS,
    DEFAULT_PRODUCTS,
    DEFAULT_SEED,
    DEFAULT_TRANSACTIONS,
    MANIFEST_FILE,
    PRODUCTS_FILE,
    TRANSACTIONS_FILE,
    generate_dataset,
    generate_next_day,
    read_manifest,
)
from customer360.settings import get_settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write deterministic sample CSV files with known dirty rows",
        description=(
            "Write customers.csv, products.csv, transactions.csv and dirty_rows.json (every "
            "deliberately broken row and what the loader does with it). With --next-day, "
            "write the following day's delivery on top of an existing data set, plus changes.json."
        ),
    )
    sizes = (
        ("--customers", DEFAULT_CUSTOMERS),
        ("--products", DEFAULT_PRODUCTS),
        ("--transactions", DEFAULT_TRANSACTIONS),
    )
    for flag, default in sizes:
        parser.add_argument(
            flag, type=int, metavar="N", help=f"data rows in the file (default {default:,})"
        )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="same seed, same bytes (default 42)"
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: data_dir, or data_dir/next_day)"
    )
    parser.add_argument(
        "--next-day",
        action="store_true",
        help="write the next day's snapshot of the --base data set instead of a new data set."
        " Its transactions.csv holds only that day's new and changed orders, about 7%% of the"
        " base's: below about 14,000 base transactions that is under the 1,000 rows `c360 load`"
        " requires by default (C360_MIN_TRANSACTIONS)",
    )
    parser.add_argument(
        "--base", type=Path, help="the day-1 data set for --next-day (default: data_dir)"
    )
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    data_dir = get_settings().data_dir
    sizes_given = [
        value for value in (args.customers, args.products, args.transactions) if value is not None
    ]
    if args.next_day and sizes_given:
        raise UserFacingError(
            "--customers, --products and --transactions do not apply with --next-day: "
            "its sizes follow the base data set."
        )
    if args.base and not args.next_day:
        raise UserFacingError("--base only applies with --next-day.")

    started = time.perf_counter()
    if args.next_day:
        base = args.base or data_dir
        out = args.out or data_dir / "next_day"
        result = generate_next_day(base, out, seed=args.seed)
        elapsed = time.perf_counter() - started
        print(f"wrote the day after {base} to {out} in {elapsed:.1f} s (seed {args.seed})")
        for file_name, rows in result["counts"].items():
            print(f"  {file_name:<17} {rows:>11,} rows")
        for change, count in result["changes"].items():
            print(f"  {change:<22} {count:>6,}")
        _warn_below_load_thresholds(out)
        return 0

    out = args.out or data_dir
    result = generate_dataset(
        out,
        customers=DEFAULT_CUSTOMERS if args.customers is None else args.customers,
        products=DEFAULT_PRODUCTS if args.products is None else args.products,
        transactions=DEFAULT_TRANSACTIONS if args.transactions is None else args.transactions,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - started
    print(f"wrote {out} in {elapsed:.1f} s (seed {args.seed})")
    for file_name, counts in result["counts"].items():
        print(f"  {file_name:<17} {counts['rows']:>11,} rows {counts['dirty']:>8,} dirty")
    print(f"  {MANIFEST_FILE} lists each dirty row, its line and what the loader does with it")
    _warn_below_load_thresholds(out)
    return 0


def _warn_below_load_thresholds(out: Path) -> None:
    """Warn, on one line, when a written file has fewer rows than `c360 load` requires of it,
    with thresholds its load would pass."""
    settings = get_settings()
    minimums = {
        CUSTOMERS_FILE: ("C360_MIN_CUSTOMERS", settings.min_customers),
        PRODUCTS_FILE: ("C360_MIN_PRODUCTS", settings.min_products),
        TRANSACTIONS_FILE: ("C360_MIN_TRANSACTIONS", settings.min_transactions),
    }
    short, lowered = [], []
    for file_name, counts in read_manifest(out)["counts"].items():
        variable, minimum = minimums[file_name]
        if counts["rows"] < minimum:
            short.append(f"{file_name} has {counts['rows']:,} rows but {variable} is {minimum:,}")
            # Dirty rows aside, every row passes the checks: the rest is a threshold it meets.
            lowered.append(f"{variable}={counts['rows'] - counts['dirty']}")
    if short:
        print(
            f"c360: warning: {'; '.join(short)}, so `c360 load` fails its row-count threshold;"
            f" load it with lower ones: {' '.join(lowered)} c360 load --data-dir {out}",
            file=sys.stderr,
        )
