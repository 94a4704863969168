"""The c360 command as a user runs it: expected failures are one clear line and exit 1."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from customer360.embedded_db import EmbeddedServer
from customer360.generator import generate_dataset, generate_next_day
from customer360.processes import free_port


def c360(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command with these variables added to the environment (None removes one)."""
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "customer360.cli", *args],
        capture_output=True,
        text=True,
        env={name: value for name, value in merged.items() if value is not None},
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("c360: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_data_directory_is_one_clear_line(database, tmp_path):
    result = c360(
        "load", "--data-dir", str(tmp_path / "nowhere"), env={"C360_DATABASE_URL": database.dsn}
    )
    assert_one_line_error(result, "does not exist", "customers.csv")


def test_a_file_missing_a_required_column_is_refused_naming_it(
    make_database, demo_data_dir, tmp_path
):
    settings = make_database()
    for name in ("products.csv", "transactions.csv"):
        shutil.copy(demo_data_dir / name, tmp_path / name)
    with (
        (demo_data_dir / "customers.csv").open(newline="", encoding="utf-8") as src,
        (tmp_path / "customers.csv").open("w", newline="", encoding="utf-8") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        for record in reader:
            writer.writerow(record[:3] + record[4:])  # drop the email column

    result = c360("load", "--data-dir", str(tmp_path), env={"C360_DATABASE_URL": settings.dsn})

    assert_one_line_error(result, "customers.csv", "'email'")


def test_an_unreachable_database_is_one_clear_line():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/customer360"
    result = c360("status", env={"C360_DATABASE_URL": url})
    assert_one_line_error(result, "cannot reach PostgreSQL")


def test_a_setting_it_cannot_take_is_one_line_naming_the_variable():
    result = c360("status", env={"C360_API_RATE_LIMIT_PER_MINUTE": "0"})
    assert_one_line_error(
        result, "C360_API_RATE_LIMIT_PER_MINUTE '0'", "greater than or equal to 1"
    )


def test_the_api_refuses_to_start_in_jwt_mode_with_the_published_secret():
    result = c360("api", "serve", "--port", str(free_port()), env={"C360_API_AUTH_MODE": "jwt"})
    assert_one_line_error(result, "C360_JWT_SECRET is the published default")


def test_load_prints_progress_per_stage_and_the_report(make_database, demo_data_dir):
    settings = make_database()
    result = c360("load", "--data-dir", str(demo_data_dir), env={"C360_DATABASE_URL": settings.dsn})
    assert result.returncode == 0, result.stderr
    for stage in (
        "land_customers",
        "land_transactions",
        "quality_checks",
        "hubs",
        "links",
        "satellites",
        "reconciliation",
        "refresh_views",
    ):
        assert stage in result.stdout
    assert "reconciliation: 13/13 checks passed" in result.stdout
    # The quality checks' line in full, from the generator's own count of the rows it spoiled.
    files = json.loads((demo_data_dir / "dirty_rows.json").read_text())["counts"]
    staged, rejected, ghost_linked = {}, {}, {}
    for source in ("customers", "products", "transactions"):
        counts = files[f"{source}.csv"]
        ghost_linked[source] = sum(
            counts["kinds"].get(kind, 0) for kind in ("unknown_customer", "unknown_product")
        )
        rejected[source] = counts["dirty"] - ghost_linked[source]
        staged[source] = counts["rows"] - rejected[source]
    checks_line = next(line for line in result.stdout.splitlines() if "quality_checks" in line)

    def per_source(counts: dict[str, int]) -> str:
        return (
            f"{sum(counts.values())} ("
            + ", ".join(f"{source} {n}" for source, n in counts.items() if n)
            + ")"
        )

    assert checks_line.split("quality_checks", 1)[1].strip() == (
        "staged "
        + " ".join(f"{source}={n}" for source, n in staged.items())
        + f"; quarantined {per_source(rejected)}; loaded ghost-linked {per_source(ghost_linked)}"
    )
    # A stage with nothing to count shows its time only.
    assert re.search(r"^\[ *[0-9.]+s\] refresh_views$", result.stdout, re.MULTILINE)

    report = c360("report", env={"C360_DATABASE_URL": settings.dsn})
    assert report.returncode == 0, report.stderr
    assert "succeeded" in report.stdout
    assert "negative_quantity" in report.stdout

    status = c360("status", env={"C360_DATABASE_URL": settings.dsn})
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout
    assert "hub_customer" in status.stdout


def test_custom_source_mapping_loads_renamed_columns_and_formats(
    make_database, demo_data_dir, tmp_path
):
    """A user's files with other headers, another date format and their own source names."""
    settings = make_database()
    shutil.copy(demo_data_dir / "products.csv", tmp_path / "products.csv")
    shutil.copy(demo_data_dir / "transactions.csv", tmp_path / "transactions.csv")
    kept = {}
    with (
        (demo_data_dir / "customers.csv").open(newline="", encoding="utf-8") as src,
        (tmp_path / "clients.csv").open("w", newline="", encoding="utf-8") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        writer.writerow(
            [
                "ClientRef"
                if h == "customer_id"
                else "JoinedOn"
                if h == "signup_date"
                else h.upper()
                for h in header
            ]
        )
        for record in reader:
            if len(record) == len(header) and record[0].strip() and "-" in record[8]:
                y, m, d = record[8].split("-")
                record[8] = f"{d}/{m}/{y}"
                kept[record[0].strip().upper()] = f"{y}-{m}-{d}"
            writer.writerow(record)
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n"
        "  customers:\n"
        "    file: clients.csv\n"
        "    record_source: crm.clients\n"
        "    columns: {customer_id: ClientRef, first_name: FIRST_NAME, last_name: LAST_NAME,"
        " email: EMAIL, phone: PHONE, city: CITY, state: STATE, country: COUNTRY,"
        " signup_date: JoinedOn, customer_segment: CUSTOMER_SEGMENT}\n"
        "    formats: {signup_date: DD/MM/YYYY}\n"
    )

    result = c360(
        "load",
        "--data-dir",
        str(tmp_path),
        env={"C360_DATABASE_URL": settings.dsn, "C360_SOURCES_CONFIG": str(config)},
    )

    assert result.returncode == 0, result.stderr
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute(
            "select distinct record_source from raw_vault.hub_customer where customer_id <> '-1'"
        )
        assert cur.fetchall() == [("crm.clients",)]
        cur.execute("select customer_id, signup_date::text from business_vault.vw_customer_360")
        loaded = dict(cur.fetchall())
    conn.close()
    sample = [key for key in kept if key in loaded][:200]
    assert len(sample) == 200
    for key in sample:
        assert loaded[key] == kept[key]


@pytest.mark.parametrize("command", [["--help"], ["db", "--help"], ["load", "--help"]])
def test_help_is_available(command):
    result = c360(*command)
    assert result.returncode == 0
    assert "usage" in result.stdout.lower()


def test_load_refuses_superseded_files_in_one_line_unless_asked_to_reload(make_database, tmp_path):
    settings = make_database()
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    generate_dataset(day1, customers=1500, products=300, transactions=4000, seed=5)
    generate_next_day(day1, day2, seed=5)
    env = {
        "C360_DATABASE_URL": settings.dsn,
        "C360_MIN_CUSTOMERS": "100",
        "C360_MIN_PRODUCTS": "10",
        "C360_MIN_TRANSACTIONS": "100",
    }
    for data in (day1, day2):
        assert c360("load", "--data-dir", str(data), env=env).returncode == 0

    refused = c360("load", "--data-dir", str(day1), env=env)

    assert_one_line_error(refused, "batch 1 loaded", "batch 2 has loaded", "--reload")
    reloaded = c360("load", "--data-dir", str(day1), "--reload", env=env)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "succeeded" in c360("report", "--batch", "3", env=env).stdout


@pytest.fixture
def unmigrated_database(embedded_server):
    """A database on the session's server that `c360 migrate` never ran on."""
    server_url = embedded_server.dsn.rsplit("/", 1)[0]
    name = f"c360_unmigrated_{os.getpid()}"
    admin = psycopg2.connect(f"{server_url}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'drop database if exists "{name}" with (force)')
        cur.execute(f'create database "{name}"')
    yield f"{server_url}/{name}"
    with admin.cursor() as cur:
        cur.execute(f'drop database "{name}" with (force)')
    admin.close()


@pytest.mark.parametrize("command", [["load"], ["status"], ["report"]])
def test_a_database_without_the_schema_is_one_line_suggesting_migrate(
    unmigrated_database, demo_data_dir, command
):
    if command == ["load"]:
        command = ["load", "--data-dir", str(demo_data_dir)]
    result = c360(*command, env={"C360_DATABASE_URL": unmigrated_database})
    assert_one_line_error(result, "audit.load_batch", "`c360 migrate`")


@pytest.mark.parametrize(
    ("config_text", "named"),
    [
        ("sources:\n  customers:\n    formats:\n      signup_date: 5\n", "signup_date"),
        ("sources:\n  transactions:\n    timezone: Mars/Olympus\n", "Mars/Olympus"),
        ("sources:\n  customers:\n    file:\n", "customers.file"),
        ("sources: [1, 2]\n", "sources"),
    ],
)
def test_a_malformed_source_configuration_is_refused_before_any_batch_starts(
    make_database, demo_data_dir, tmp_path, config_text, named
):
    settings = make_database()
    config = tmp_path / "sources.yaml"
    config.write_text(config_text)

    result = c360(
        "load",
        "--data-dir",
        str(demo_data_dir),
        env={"C360_DATABASE_URL": settings.dsn, "C360_SOURCES_CONFIG": str(config)},
    )

    assert_one_line_error(result, str(config), named)
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*) from audit.load_batch")
        assert cur.fetchone()[0] == 0
    conn.close()


def generate_tiny(out: Path) -> subprocess.CompletedProcess:
    """`c360 generate` of ten rows per file into ``out``."""
    return c360(
        "generate", "--customers", "10", "--products", "10", "--transactions", "10",
        "--out", str(out),
    )  # fmt: skip


def test_an_output_path_that_is_a_file_is_one_clear_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder\n")

    result = generate_tiny(taken)

    assert_one_line_error(result, os.strerror(errno.EEXIST), str(taken))


def test_a_source_file_that_is_a_folder_is_one_clear_line(make_database, demo_data_dir, tmp_path):
    settings = make_database()
    for name in ("products.csv", "transactions.csv"):
        shutil.copy(demo_data_dir / name, tmp_path / name)
    (tmp_path / "customers.csv").mkdir()

    result = c360("load", "--data-dir", str(tmp_path), env={"C360_DATABASE_URL": settings.dsn})

    assert_one_line_error(result, os.strerror(errno.EISDIR), str(tmp_path / "customers.csv"))


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder nothing may be created in, not even by root (whom file modes do not stop)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder immutable here (chattr +i)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_folder_the_command_may_not_write_to_is_one_clear_line(unwritable_folder):
    out = unwritable_folder / "data"

    result = generate_tiny(out)

    refusals = (os.strerror(errno.EACCES), os.strerror(errno.EPERM))
    assert_one_line_error(result, str(out))
    assert any(refusal in result.stderr for refusal in refusals), result.stderr


@pytest.fixture
def own_embedded_work_dir(tmp_path):
    """A work dir of the test's own for `c360 db`; any server left running in it is stopped."""
    work_dir = tmp_path / "work"
    yield work_dir
    # pg_ctl finds the server by its data directory, whatever its port.
    EmbeddedServer(pgdata=work_dir / "postgres" / "pgdata", port=0).stop()


def embedded_env(work_dir, port: int) -> dict:
    return {
        "C360_WORK_DIR": str(work_dir),
        "C360_EMBEDDED_PG_PORT": str(port),
        "C360_DATABASE_URL": None,
    }


def accepts_connections(port: int) -> bool:
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
    except psycopg2.OperationalError:
        return False
    return True


def test_db_start_on_another_port_than_the_running_server_names_its_port(own_embedded_work_dir):
    running_port, other_port = free_port(), free_port()
    pgdata = own_embedded_work_dir / "postgres" / "pgdata"
    started = c360("db", "start", env=embedded_env(own_embedded_work_dir, running_port))
    assert started.returncode == 0, started.stderr

    refused = c360("db", "start", env=embedded_env(own_embedded_work_dir, other_port))

    assert_one_line_error(
        refused, str(pgdata), f"port {running_port}", f"C360_EMBEDDED_PG_PORT={running_port}"
    )
    assert accepts_connections(running_port)
    assert not accepts_connections(other_port)


def test_db_start_on_a_port_another_program_holds_is_one_line_naming_it(own_embedded_work_dir):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_program:
        other_program.bind(("127.0.0.1", port))
        other_program.listen()

        refused = c360("db", "start", env=embedded_env(own_embedded_work_dir, port))

    assert_one_line_error(refused, f"port {port}", "in use", "C360_EMBEDDED_PG_PORT")
    assert not (own_embedded_work_dir / "postgres" / "pgdata" / "postmaster.pid").exists()


def test_db_stop_says_whether_a_server_was_running(own_embedded_work_dir):
    port = free_port()
    env = embedded_env(own_embedded_work_dir, port)

    never_started = c360("db", "stop", env=env)
    assert never_started.returncode == 0, never_started.stderr
    assert never_started.stdout.strip() == "embedded PostgreSQL was not running"

    assert c360("db", "start", env=env).returncode == 0
    stopped = c360("db", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "embedded PostgreSQL stopped"
    assert not accepts_connections(port)
    assert not (own_embedded_work_dir / "postgres" / "pgdata" / "postmaster.pid").exists()

    again = c360("db", "stop", env=env)
    assert again.stdout.strip() == "embedded PostgreSQL was not running"


def test_db_stop_reports_a_server_that_does_not_stop(own_embedded_work_dir):
    port = free_port()
    env = embedded_env(own_embedded_work_dir, port)
    assert c360("db", "start", env=env).returncode == 0
    pgdata = own_embedded_work_dir / "postgres" / "pgdata"
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    # A suspended postmaster cannot act on pg_ctl's shutdown signals; pg_ctl gives up after
    # PGCTLTIMEOUT seconds.
    os.kill(postmaster, signal.SIGSTOP)
    try:
        result = c360("db", "stop", env={**env, "PGCTLTIMEOUT": "2"})
    finally:
        os.kill(postmaster, signal.SIGCONT)

    assert_one_line_error(result, str(pgdata), "still runs")
    assert "stopped" not in result.stdout


def test_generate_says_what_the_loader_does_with_dirty_rows(tmp_path):
    result = c360(
        "generate",
        "--customers",
        "200",
        "--products",
        "50",
        "--transactions",
        "500",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "dirty_rows.json lists each dirty row, its line and what the loader does with it" in (
        result.stdout
    )
    # Some of the dirty rows load, linked to the ghost record: the output must not say the
    # loader rejects them all.
    kinds = json.loads((tmp_path / "dirty_rows.json").read_text())["counts"]["transactions.csv"]
    assert kinds["kinds"].get("unknown_customer", 0) > 0
    assert "reject" not in result.stdout
    assert "reject" not in c360("generate", "--help").stdout


def test_a_next_day_below_the_transactions_threshold_warns_with_thresholds_its_load_passes(
    make_database, tmp_path
):
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    generate_dataset(day1, customers=1500, products=300, transactions=4000, seed=5)
    thresholds = {
        "C360_MIN_CUSTOMERS": "1000",
        "C360_MIN_PRODUCTS": "100",
        "C360_MIN_TRANSACTIONS": "1000",
    }

    result = c360("generate", "--next-day", "--base", str(day1), "--out", str(day2), env=thresholds)

    assert result.returncode == 0, result.stderr
    with (day2 / "transactions.csv").open(newline="", encoding="utf-8") as delivered:
        transactions = sum(1 for _ in csv.reader(delivered)) - 1
    assert transactions < 1000
    warning = result.stderr.strip()
    assert len(warning.splitlines()) == 1, warning
    assert warning.startswith("c360: warning: ")
    assert f"transactions.csv has {transactions:,} rows but C360_MIN_TRANSACTIONS is 1,000" in (
        warning
    )
    assert "customers.csv" not in warning and "products.csv" not in warning
    # The thresholds it suggests are ones the day's load passes.
    suggested = dict(re.findall(r"(C360_MIN_[A-Z]+)=(\d+)", warning))
    assert set(suggested) == {"C360_MIN_TRANSACTIONS"}
    settings = make_database()
    loaded = c360(
        "load",
        "--data-dir",
        str(day2),
        env={**thresholds, **suggested, "C360_DATABASE_URL": settings.dsn},
    )
    assert loaded.returncode == 0, loaded.stderr

    enough = c360(
        "generate",
        "--next-day",
        "--base",
        str(day1),
        "--out",
        str(day2),
        env={**thresholds, "C360_MIN_TRANSACTIONS": str(transactions)},
    )
    assert enough.returncode == 0, enough.stderr
    assert enough.stderr == ""
