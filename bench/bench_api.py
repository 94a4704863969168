"""Benchmark the REST API on the loaded sample and compare it with the database's own ceiling.

Starts ``c360 api serve`` on 127.0.0.1, drives it with wrk from a separate process over
loopback at a fixed number of connections, then runs pgbench with the same SQL the API runs
for each endpoint, at the same concurrency. Each endpoint is first warmed up (connection pools
filled, statements prepared, caches loaded), then measured several times: the JSON document
gives every run and the median of each figure (requests/s, p50, p99), pgbench transactions/s
for the same statements, and each endpoint's share of that ceiling.

Needs a loaded warehouse (``c360 generate && c360 load``) and ``wrk`` (``apt-get install wrk``).

    python bench/bench_api.py [--connections 32] [--duration 15] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from api import queries
from customer360.embedded_db import bin_path
from customer360.processes import free_port
from customer360.settings import PROJECT_ROOT, get_settings

BENCH_KEY = "bench-key"

# The benchmarked endpoints: the path template wrk requests, and the SQL statements (each
# with the API's own text) one request runs. ``:id`` is the pgbench variable of the id.
ENDPOINTS = {
    "/customers/{id}": {
        "path": "/customers/%s",
        "ids": "customers",
        "statements": [(queries.CUSTOMER_WITH_ACTIVITY, ["{id}"])],
    },
    "/customers?limit=100": {
        "path": "/customers?limit=100",
        "ids": None,
        "statements": [
            (queries.count_statement("customers", ()), []),
            (queries.page_statement("customers", "customer_id", (), None), ["0", "101"]),
        ],
    },
    "/customers/{id}/orders": {
        "path": "/customers/%s/orders",
        "ids": "customers_with_orders",
        "statements": [
            (
                queries.count_statement("orders", ("customer_id = %s",)),
                ["{id}"],
            ),
            (
                queries.page_statement("orders", "transaction_ts", ("customer_id = %s",), None),
                ["{id}", "0", "101"],
            ),
        ],
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per endpoint")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of unrecorded load first")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print("bench_api: wrk is required (apt-get install -y wrk)", file=sys.stderr)
        return 1
    settings = get_settings()
    ids = sample_ids(settings.dsn)
    if not ids["customers"]:
        print(
            "bench_api: the warehouse is empty; run `c360 generate && c360 load`", file=sys.stderr
        )
        return 1

    port = args.port or free_port()
    result: dict = {
        "machine": machine(),
        "settings": {
            "connections": args.connections,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "warmup_s": args.warmup,
            "uvicorn_workers": args.workers,
            "pool_max_per_worker": settings.api_pool_max,
            "auth_mode": "api_key",
            "server": "uvicorn + uvloop + httptools, one write per response (api.serving)",
        },
        "load_average_before": os.getloadavg(),
        "endpoints": {},
    }
    with tempfile.TemporaryDirectory(prefix="c360-bench-") as scratch:
        scratch_dir = Path(scratch)
        with serving_api(port, args.workers, settings, scratch_dir):
            base_url = f"http://127.0.0.1:{port}"
            result["endpoints"]["/health"] = {
                "http": measure(base_url, "/health", [], args, scratch_dir),
                "note": "no database: the HTTP stack's own ceiling",
            }
            for name, endpoint in ENDPOINTS.items():
                endpoint_ids = ids[endpoint["ids"]] if endpoint["ids"] else []
                result["endpoints"][name] = {
                    "http": measure(base_url, endpoint["path"], endpoint_ids, args, scratch_dir)
                }
        # The database's ceiling, measured with the API stopped so that it has the machine.
        for name, endpoint in ENDPOINTS.items():
            ceiling = run_pgbench(settings.dsn, endpoint, ids, args, scratch_dir)
            entry = result["endpoints"][name]
            entry["pgbench"] = ceiling
            entry["share_of_pgbench_ceiling"] = round(
                entry["http"]["requests_per_s"] / ceiling["transactions_per_s"], 3
            )
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


def sample_ids(dsn: str) -> dict[str, list[str]]:
    """Customer ids to request: every loaded customer, and those with orders."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        customers = [
            row[0]
            for row in conn.execute(
                "select customer_id from business_vault.vw_customer_360 order by customer_id"
            )
        ]
        with_orders = [
            row[0]
            for row in conn.execute(
                "select customer_id from business_vault.vw_customer_360 where order_count > 0"
                " order by customer_id"
            )
        ]
    return {"customers": customers, "customers_with_orders": with_orders}


class serving_api:
    """``c360 api serve`` in a subprocess for the duration of a ``with`` block."""

    def __init__(self, port: int, workers: int, settings, scratch_dir: Path) -> None:
        self.port = port
        self.workers = workers
        self.settings = settings
        self.log_path = scratch_dir / "api.log"

    def __enter__(self) -> serving_api:
        env = {
            **os.environ,
            "C360_API_AUTH_MODE": "api_key",
            "C360_API_KEYS": BENCH_KEY,
            # The benchmark measures throughput, not the limiter's refusals.
            "C360_API_RATE_LIMIT_PER_MINUTE": str(10**9),
        }
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "customer360.cli", "api", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers),
            ],
            cwd=PROJECT_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        url = f"http://127.0.0.1:{self.port}/ready"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"API exited: {self.log_path.read_text()}")
            time.sleep(0.3)
        else:
            raise RuntimeError("API not ready within 90 s")
        # Every worker opens its pool and prepares its statements before measuring.
        for path in ("/customers?limit=100", "/customers/C000002", "/customers/C000002/orders"):
            for _ in range(20 * self.workers):
                httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"X-API-Key": BENCH_KEY})
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def measure(base_url: str, path: str, ids: list[str], args, scratch_dir: Path) -> dict:
    """Warm-up, then ``args.repeats`` wrk runs: the median of each figure, and every run."""
    run_wrk(base_url, path, ids, args, scratch_dir, args.warmup)
    runs = [
        run_wrk(base_url, path, ids, args, scratch_dir, args.duration) for _ in range(args.repeats)
    ]
    summary = {
        figure: round(statistics.median(run[figure] for run in runs), 2)
        for figure in ("requests_per_s", "p50_ms", "p99_ms")
    }
    summary["requests"] = sum(run["requests"] for run in runs)
    summary["non_2xx"] = sum(run["non_2xx"] for run in runs)
    summary["runs"] = runs
    return summary


def run_wrk(
    base_url: str, path: str, ids: list[str], args, scratch_dir: Path, seconds: int
) -> dict:
    """wrk at ``args.connections`` connections on ``path`` (``%s`` takes a random id)."""
    script = scratch_dir / "request.lua"
    id_list = ",".join(f'"{customer_id}"' for customer_id in ids)
    script.write_text(
        f'wrk.headers["X-API-Key"] = "{BENCH_KEY}"\n'
        f"local ids = {{{id_list}}}\n"
        f'local path = "{path}"\n'
        "request = function()\n"
        "  if #ids > 0 then\n"
        "    return wrk.format(nil, string.format(path, ids[math.random(#ids)]))\n"
        "  end\n"
        "  return wrk.format(nil, path)\n"
        "end\n"
    )
    threads = min(2, args.connections)
    output = subprocess.run(
        [
            "wrk", f"-t{threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
            "-s", str(script), base_url,
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return parse_wrk(output)


def parse_wrk(output: str) -> dict:
    def latency_ms(percentile: str) -> float:
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        value, unit = float(match.group(1)), match.group(2)
        return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
    }


def run_pgbench(dsn: str, endpoint: dict, ids: dict, args, scratch_dir: Path) -> dict:
    """pgbench with the endpoint's statements as one transaction, at the same concurrency."""
    lines = []
    if endpoint["ids"]:
        # pgbench variables are numbers; the id is built from one as the sample's ids are.
        lines.append(r"\set n random(1, 10000)")
    for statement, params in endpoint["statements"]:
        values = ["'C' || lpad(:n::text, 6, '0')" if p == "{id}" else p for p in params]
        lines.append(statement.replace("\n", " ") % tuple(values) + ";")
    script = scratch_dir / "statements.sql"
    script.write_text("\n".join(lines) + "\n")
    conninfo = psycopg.conninfo.conninfo_to_dict(dsn)
    output = subprocess.run(
        [
            str(bin_path("pgbench")), "-n", "-M", "prepared", "-c", str(args.connections),
            "-j", "2", "-T", str(args.duration), "-f", str(script),
            "-h", conninfo.get("host", "127.0.0.1"), "-p", str(conninfo.get("port", 5432)),
            "-U", conninfo.get("user", "postgres"), conninfo.get("dbname", "customer360"),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {
        "transactions_per_s": round(float(re.search(r"tps = ([\d.]+)", output).group(1)), 1),
        "latency_avg_ms": float(re.search(r"latency average = ([\d.]+) ms", output).group(1)),
        "statements_per_transaction": len(endpoint["statements"]),
    }


def machine() -> dict:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.*)", cpuinfo.read_text())
        cpu = match.group(1) if match else cpu
    memory_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo.read_text()).group(1))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    sys.exit(main())
