"""Benchmark of the warehouse load: seconds per stage and the loader's peak memory, for the
default scale and for 1,000,000 transactions, each followed by its next-day snapshot.

Runs on its own embedded PostgreSQL (a temporary directory, deleted afterwards, unless
--work-dir names one to keep; a free port) and prints JSON:

    python bench/bench_warehouse.py [--scales default,1m] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALES = {
    "default": {"customers": 10_000, "products": 5_000, "transactions": 100_000},
    "1m": {"customers": 100_000, "products": 5_000, "transactions": 1_000_000},
}

# Runs in a child process so that its peak RSS is the loader's alone.
LOAD_ONE_BATCH = """
import json, resource, sys, time
from pathlib import Path
from customer360.pipeline import run_batch
from customer360.settings import Settings
started = time.perf_counter()
report = run_batch(Path(sys.argv[1]), Settings(database_url=sys.argv[2]))
print(json.dumps({
    "seconds": round(time.perf_counter() - started, 3),
    "stages": report["stage_timings"],
    "inserted": report["row_counts"]["inserted"],
    "reconciliation_passed": all(c["passed"] for c in report["reconciliation"]),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def load(data_dir: Path, dsn: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", LOAD_ONE_BATCH, str(data_dir), dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def machine() -> dict:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
            platform.processor(),
        )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_at_start": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="default,1m")
    parser.add_argument("--work-dir", type=Path, help="keep data and database here")
    args = parser.parse_args()

    from customer360.embedded_db import EmbeddedServer
    from customer360.generator import generate_dataset, generate_next_day
    from customer360.migrate import migrate
    from customer360.processes import free_port
    from customer360.settings import Settings

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="c360-bench-"))
    server = EmbeddedServer(work / "postgres" / "pgdata", free_port(), "postgres")
    server.start()
    results = {"benchmark": "warehouse_load", "machine": machine(), "runs": {}}
    try:
        with server_version(server.dsn) as version:
            results["machine"]["postgresql"] = version
        for scale in args.scales.split(","):
            sizes = SCALES[scale]
            data, next_day = work / scale / "day1", work / scale / "day2"
            started = time.perf_counter()
            generate_dataset(data, seed=42, **sizes)
            generate_next_day(data, next_day, seed=42)
            generated = round(time.perf_counter() - started, 2)
            # The generator's files reach the disk before the load is timed, as a delivery
            # that arrived earlier would have: the load is not charged for writing them back.
            os.sync()
            dsn = create_database(server.dsn, f"bench_{scale}")
            migrate(Settings(database_url=dsn))
            full = load(data, dsn)
            incremental = load(next_day, dsn)
            results["runs"][scale] = {
                "sizes": sizes,
                "generate_seconds": generated,
                "full_load": full,
                "next_day_load": incremental,
                "next_day_to_full_ratio": round(incremental["seconds"] / full["seconds"], 3),
            }
    finally:
        server.stop()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


class server_version:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __enter__(self) -> str:
        import psycopg2

        self.conn = psycopg2.connect(self.dsn)
        with self.conn.cursor() as cur:
            cur.execute("show server_version")
            return cur.fetchone()[0]

    def __exit__(self, *exc) -> None:
        self.conn.close()


def create_database(admin_dsn: str, name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'drop database if exists "{name}" with (force)')
        cur.execute(f'create database "{name}"')
    conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


if __name__ == "__main__":
    main()
