"""Schema migrations on a real PostgreSQL: every schema file applies again over a loaded
warehouse without losing a row, and ``migrate`` applies exactly the files that changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import pytest

from customer360.generator import generate_dataset, generate_next_day
from customer360.migrate import migrate, schema_files
from customer360.pipeline import run_batch
from tests.database_state import fingerprints, query
from tests.deliveries import customer, deliver, order

# The platform's schemas; a re-applied file must leave every table and view in them as it
# was, but for the record of what migrate applied.
SCHEMAS = ("audit", "staging", "raw_vault", "business_vault", "public")
APPLIED_FILES = "audit.schema_migrations"


def kept_relations(settings) -> list[str]:
    """Every table, view and materialized view of the platform's schemas."""
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute(
            """
            select format('%%s.%%s', n.nspname, c.relname) from pg_class as c
            join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname = any (%s) and c.relkind in ('r', 'p', 'v', 'm')
              -- not an extension's (pg_stat_statements counts the statements of the test)
              and not exists (
                  select from pg_depend as d
                  where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e'
              )
            order by 1
            """,
            (list(SCHEMAS),),
        )
        relations = [name for (name,) in cur.fetchall() if name != APPLIED_FILES]
    conn.close()
    return relations


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
    """A warehouse with history in every vault table: a day, its next day, and an order that
    moves to another customer and back (an effectivity row)."""
    settings = make_database().model_copy(
        update={"min_customers": 0, "min_products": 0, "min_transactions": 0}
    )
    data, next_day = tmp_path / "data", tmp_path / "next_day"
    generate_dataset(data, customers=1500, products=300, transactions=4000, seed=11)
    generate_next_day(data, next_day, seed=11)
    run_batch(data, settings)
    run_batch(next_day, settings)
    # (The third delivery's total differs: the same files again would be refused.)
    for number, (customer_id, total) in enumerate(
        [("C1", "10.00"), ("C2", "10.00"), ("C1", "12.00")]
    ):
        run_batch(
            deliver(
                tmp_path / f"moved-{number}",
                customers=[customer("C1"), customer("C2")],
                transactions=[order("T-MOVED", customer_id=customer_id, total=total)],
            ),
            settings,
        )
    return settings


def test_every_schema_file_applies_again_over_a_loaded_warehouse(loaded_database, tmp_path):
    """Every table and view holds what it held, but for the order facts' bookkeeping: they are
    refilled from the vault, so no batch's staged rows gave them any more."""
    names = [path.name for path in schema_files()]
    facts_state = "business_vault.order_facts_state"
    relations = [name for name in kept_relations(loaded_database) if name != facts_state]
    state = f"select refreshed_through, filled_from_batch from {facts_state}"
    ((refreshed_through, filled_from_batch),) = query(loaded_database, state)
    assert (
        filled_from_batch
        == query(loaded_database, "select max(batch_id) from audit.load_batch")[0][0]
    )
    before = fingerprints(loaded_database, relations)
    objects_before = schema_objects(loaded_database)
    for table in (
        "raw_vault.sat_customer_order_effectivity",
        "audit.reconciliation",
        "business_vault.order_facts",
        "business_vault.pit_customer",
        "staging.stg_transactions",
    ):
        assert before[table][0] > 0, table

    applied = migrate(loaded_database, copy_of_schema(tmp_path / "sql", changed=tuple(names)))

    assert [(file.name, file.changed) for file in applied] == [(name, True) for name in names]
    assert fingerprints(loaded_database, relations) == before
    assert query(loaded_database, state) == [(refreshed_through, None)]
    assert schema_objects(loaded_database) == objects_before


def test_migrate_applies_only_the_files_that_changed(make_database, tmp_path):
    settings = make_database()
    names = [path.name for path in schema_files()]
    assert [file.changed for file in migrate(settings)] == [False] * len(names)

    edited = "05_create_functions.sql"
    applied = migrate(settings, copy_of_schema(tmp_path / "sql", changed=(edited,)))

    assert [file.name for file in applied if file.changed] == [edited]
    assert [file.changed for file in migrate(settings, tmp_path / "sql")] == [False] * len(names)
