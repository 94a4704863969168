"""The c360 command as a user runs it: expected failures are one clear line and exit 1."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import psycopg2
import pytest

from customer360.generator import generate_dataset, generate_next_day
from tests.conftest import free_port


def c360(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "customer360.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
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
