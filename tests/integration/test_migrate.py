"""Schema migrations on a real PostgreSQL: every schema file applies again over a loaded
warehouse without losing a row, and ``migrate`` applies exactly the files that changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import pytest

from customer360.generator import generate_dataset
from customer360.migrate import migrate, schema_files
from customer360.pipeline import run_batch
from tests.database_state import fingerprints

# What a re-applied file must leave as it was: the vault, the batch records and every
# business view's rows.
KEPT_RELATIONS = (
    "raw_vault.hub_customer",
    "raw_vault.hub_product",
    "raw_vault.hub_order",
    "raw_vault.link_customer_order",
    "raw_vault.link_order_product",
    "raw_vault.sat_customer_details",
    "raw_vault.sat_product_details",
    "raw_vault.sat_order_details",
    "audit.load_batch",
    "audit.quarantine",
    "business_vault.vw_customer_360",
    "business_vault.vw_product_analytics",
    "business_vault.vw_order_analytics",
    "business_vault.vw_customer_history",
)


def schema_objects(settings) -> set[tuple[str, str, str]]:
    """(schema, name, kind) of every relation and routine in the platform's schemas."""
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute(
            """
            select n.nspname, c.relname, c.relkind::text from pg_class as c
            join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname in ('audit', 'staging', 'raw_vault', 'business_vault')
            union all
            select n.nspname, p.oid::regprocedure::text, p.prokind::text from pg_proc as p
            join pg_namespace as n on n.oid = p.pronamespace
            where n.nspname in ('audit', 'staging', 'raw_vault', 'business_vault')
            """
        )
        objects = set(cur.fetchall())
    conn.close()
    return objects


def copy_of_schema(target: Path, changed: tuple[str, ...]) -> Path:
    """The schema files in ``target``, with a comment added to those named in ``changed``."""
    target.mkdir()
    for path in schema_files():
        copy = target / path.name
        shutil.copyfile(path, copy)
        if path.name in changed:
            copy.write_text(path.read_text(encoding="utf-8") + "\n-- edited\n", encoding="utf-8")
    return target


@pytest.fixture
def loaded_database(make_database, tmp_path):
    settings = make_database().model_copy(
        update={"min_customers": 100, "min_products": 10, "min_transactions": 100}
    )
    data = tmp_path / "data"
    generate_dataset(data, customers=1500, products=300, transactions=4000, seed=11)
    run_batch(data, settings)
    return settings


def test_every_schema_file_applies_again_over_a_loaded_warehouse(loaded_database, tmp_path):
    names = [path.name for path in schema_files()]
    before = fingerprints(loaded_database, KEPT_RELATIONS)
    objects_before = schema_objects(loaded_database)
    assert before["raw_vault.hub_order"][0] > 0

    applied = migrate(loaded_database, copy_of_schema(tmp_path / "sql", changed=tuple(names)))

    assert [(file.name, file.changed) for file in applied] == [(name, True) for name in names]
    assert fingerprints(loaded_database, KEPT_RELATIONS) == before
    assert schema_objects(loaded_database) == objects_before


def test_migrate_applies_only_the_files_that_changed(make_database, tmp_path):
    settings = make_database()
    names = [path.name for path in schema_files()]
    assert [file.changed for file in migrate(settings)] == [False] * len(names)

    edited = "05_create_functions.sql"
    applied = migrate(settings, copy_of_schema(tmp_path / "sql", changed=(edited,)))

    assert [file.name for file in applied if file.changed] == [edited]
    assert [file.changed for file in migrate(settings, tmp_path / "sql")] == [False] * len(names)
