"""``c360 load``, ``c360 report`` and ``c360 status``: the warehouse load and its bookkeeping."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from customer360.db import transaction
from customer360.pipeline import batch_report, run_batch
from customer360.settings import get_settings
from customer360.vault import VAULT_TABLES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser("load", help="load a batch of CSV files into the Data Vault")
    load.add_argument(
        "--data-dir", type=Path, help="folder with the three CSV files (default: C360_DATA_DIR)"
    )
    load.add_argument("--json", action="store_true", help="print the run report as JSON")
    load.add_argument(
        "--reload",
        action="store_true",
        help="load files an earlier batch loaded even though later batches have loaded others"
        " (their older values become current again)",
    )
    load.set_defaults(handler=load_command)

    report = subparsers.add_parser("report", help="print a batch's quality and reconciliation")
    report.add_argument("--batch", type=int, help="batch id (default: the latest)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.set_defaults(handler=report_command)

    subparsers.add_parser("status", help="show recent batches and vault sizes").set_defaults(
        handler=status_command
    )


def load_command(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or get_settings().data_dir
    started = time.perf_counter()

    def progress(stage: str, info: dict) -> None:
        if not args.json:
            elapsed = time.perf_counter() - started
            print(f"[{elapsed:7.2f}s] {stage:<16} {_summary(stage, info)}".rstrip(), flush=True)

    report = run_batch(Path(data_dir), progress=progress, reload=args.reload)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


def report_command(args: argparse.Namespace) -> int:
    report = batch_report(args.batch)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0 if report.get("status") != "failed" else 1


def status_command(args: argparse.Namespace) -> int:
    with transaction() as cur:
        cur.execute(
            """
            select batch_id, status, started_at, finished_at - started_at, coalesce(message, '')
            from audit.load_batch order by batch_id desc limit 5
            """
        )
        batches = cur.fetchall()
        counts = {}
        for table in VAULT_TABLES:
            cur.execute(f"select count(*) from raw_vault.{table}")
            counts[table] = cur.fetchone()[0]
    print("recent batches:")
    if not batches:
        print("  none yet: run `c360 load`")
    for batch_id, status, started, duration, message in batches:
        took = f"{duration.total_seconds():.2f}s" if duration else "-"
        print(f"  #{batch_id:<5} {status:<10} {started:%Y-%m-%d %H:%M:%S} {took:>9}  {message}")
    print("raw vault rows:")
    for table, count in counts.items():
        print(f"  {table:<22} {count:>12,}")
    return 0


def print_report(report: dict) -> None:
    """The human-readable run report of a batch."""
    counts = report.get("row_counts", {})
    print(
        f"\nbatch {report['batch_id']} ({report.get('status', '?')}), load_dts {report['load_dts']}"
    )
    landed = counts.get("landed", {})
    staged = counts.get("staged", {})
    quarantined = counts.get("quarantined", {})
    print(f"  {'source':<14}{'rows':>10}{'staged':>10}{'quarantined':>13}")
    for source, info in landed.items():
        rejected = sum(n for reason, n in quarantined.get(source, {}).items() if _rejected(reason))
        print(f"  {source:<14}{info['data_rows']:>10,}{staged.get(source, 0):>10,}{rejected:>13,}")
    for source, reasons in quarantined.items():
        for reason, count in reasons.items():
            print(f"    {source}: {reason}: {count:,}")
    inserted = counts.get("inserted", {})
    if inserted:
        print("  vault rows added: " + ", ".join(f"{t} {n:,}" for t, n in inserted.items()))
    checks = report.get("reconciliation", [])
    if checks:
        passed = sum(1 for c in checks if c["passed"])
        print(f"  reconciliation: {passed}/{len(checks)} checks passed")
        for check in checks:
            if not check["passed"]:
                print(
                    f"    FAILED {check['check']}: expected {check['expected']},"
                    f" got {check['actual']}"
                )
    timings = report.get("stage_timings", {})
    if timings:
        print("  seconds: " + ", ".join(f"{stage} {secs}" for stage, secs in timings.items()))
    if report.get("message"):
        print(f"  {report['message']}")


def _summary(stage: str, info: dict) -> str:
    """The detail of a stage's progress line: its counts, whole and on one line."""
    if stage == "quality_checks":
        return _checks_summary(info["staged"], info["quarantined"])
    return ", ".join(f"{key}={value}" for key, value in info.items())


def _checks_summary(staged: dict[str, int], quarantined: dict[str, dict[str, int]]) -> str:
    """Rows staged per source; rows quarantined and rows loaded ghost-linked, in all and
    per source."""
    rejected, ghost_linked = {}, {}
    for source, reasons in quarantined.items():
        rejected[source] = sum(n for reason, n in reasons.items() if _rejected(reason))
        ghost_linked[source] = sum(n for reason, n in reasons.items() if not _rejected(reason))
    parts = [
        "staged " + " ".join(f"{source}={count}" for source, count in staged.items()),
        _total_by_source("quarantined", rejected),
    ]
    if any(ghost_linked.values()):
        parts.append(_total_by_source("loaded ghost-linked", ghost_linked))
    return "; ".join(parts)


def _total_by_source(label: str, counts: dict[str, int]) -> str:
    by_source = ", ".join(f"{source} {count}" for source, count in counts.items() if count)
    return f"{label} {sum(counts.values())}" + (f" ({by_source})" if by_source else "")


def _rejected(reason: str) -> bool:
    # Unknown customers and products are quarantined too, but their rows load ghost-linked.
    return "ghost-linked" not in reason
