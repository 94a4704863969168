"""The warehouse load end to end on a real PostgreSQL: counts, quarantine, idempotence,
history, thresholds and reconciliation, each checked against the CSV files themselves."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from customer360.generator import generate_dataset, generate_next_day
from customer360.migrate import migrate, schema_files
from customer360.pipeline import (
    ReconciliationError,
    SupersededFilesError,
    check_staging,
    fail_batch,
    load_hubs,
    load_links,
    load_satellites,
    load_staging,
    reconcile,
    refresh_business_views,
    run_batch,
    start_batch,
)
from customer360.quality import ThresholdBreachedError
from customer360.reconcile import SOURCES, counts_by_hash_totals
from customer360.sources import SOURCE_NAMES
from customer360.vault import VAULT_TABLES
from tests.database_state import fingerprints, query
from tests.deliveries import customer, deliver, order, product
from tests.expected import (
    GHOST_ID,
    ExpectedWarehouse,
    assert_customer_360_matches,
    assert_order_analytics_matches,
    assert_product_analytics_matches,
    expected_after_next_day,
    expected_warehouse,
    normalise,
    read_rows,
)


def vault_counts(settings) -> dict[str, int]:
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        counts = {}
        for table in VAULT_TABLES:
            cur.execute(f"select count(*) from raw_vault.{table}")
            counts[table] = cur.fetchone()[0]
    conn.close()
    return counts


def vault_fingerprint(settings) -> dict[str, tuple[int, str]]:
    """Every vault table's row count and full content, to prove nothing changed."""
    return fingerprints(settings, [f"raw_vault.{table}" for table in VAULT_TABLES])


def load_up_to_the_vault(data_dir: Path, settings) -> int:
    """Start a batch and run it through staging, checks and the vault, stopping before
    reconciliation and the refresh; returns its id."""
    batch_id = start_batch(data_dir, settings)
    for source in SOURCE_NAMES:
        load_staging(batch_id, source, settings)
    check_staging(batch_id, settings)
    for load in (load_hubs, load_links, load_satellites):
        load(batch_id, settings)
    return batch_id


@pytest.fixture
def small_database(make_database):
    """A fresh database whose thresholds suit the small data set's next-day delta."""
    return make_database().model_copy(
        update={"min_customers": 100, "min_products": 10, "min_transactions": 100}
    )


@pytest.fixture
def any_size_database(make_database):
    """A fresh database that takes deliveries of a single row per source."""
    return make_database().model_copy(
        update={"min_customers": 1, "min_products": 1, "min_transactions": 1}
    )


def load_twelve_orders(folder: Path, settings) -> list[str]:
    """Load T01 to T12, enough orders that a later batch rewrites the facts of the orders it
    changed rather than all of them; returns their ids."""
    orders = [f"T{number:02}" for number in range(1, 13)]
    run_batch(deliver(folder, transactions=[order(o) for o in orders]), settings)
    return orders


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    """A small day-1 data set and its next-day delivery."""
    base = tmp_path_factory.mktemp("day1")
    generate_dataset(base, customers=1500, products=300, transactions=4000, seed=7)
    next_day = tmp_path_factory.mktemp("day2")
    generate_next_day(base, next_day, seed=7)
    return base, next_day


def test_full_load_puts_every_clean_row_in_the_vault(loaded_warehouse, demo_data_dir):
    expected = expected_warehouse(demo_data_dir)
    ghost_customer_orders = sum(
        1 for o in expected.orders.values() if o["customer_key"] == GHOST_ID
    )
    assert ghost_customer_orders > 0  # the demo data exercises the ghost record

    counts = vault_counts(loaded_warehouse)

    assert counts["hub_customer"] == len(expected.customers) + 1  # plus the ghost record
    assert counts["hub_product"] == len(expected.products) + 1
    assert counts["hub_order"] == len(expected.orders)
    assert counts["link_customer_order"] == len(expected.orders)
    assert counts["link_order_product"] == len(expected.orders)
    assert counts["sat_customer_details"] == len(expected.customers)
    assert counts["sat_product_details"] == len(expected.products)
    assert counts["sat_order_details"] == len(expected.orders)
    hub_ids = {
        row[0] for row in query(loaded_warehouse, "select customer_id from raw_vault.hub_customer")
    }
    assert hub_ids == set(expected.customers) | {GHOST_ID}


def test_every_dirty_row_is_quarantined_with_its_reason(loaded_warehouse, demo_data_dir):
    expected = expected_warehouse(demo_data_dir)
    for file_name in ("customers.csv", "products.csv", "transactions.csv"):
        rejected = set(
            query(
                loaded_warehouse,
                "select line_number, reason from audit.quarantine"
                " where batch_id = 1 and source_file = %s and disposition = 'rejected'",
                (file_name,),
            )
        )
        ghost_linked = set(
            query(
                loaded_warehouse,
                "select line_number, reason from audit.quarantine"
                " where batch_id = 1 and source_file = %s and disposition = 'ghost_linked'",
                (file_name,),
            )
        )
        assert rejected == expected.rejected[file_name], file_name
        assert ghost_linked == expected.ghost_linked[file_name], file_name


def test_quarantined_rows_keep_the_raw_values(loaded_warehouse, demo_data_dir):
    manifest = json.loads((demo_data_dir / "dirty_rows.json").read_text())
    entry = next(
        e
        for e in manifest["dirty_rows"]
        if e["file"] == "transactions.csv" and e["kind"] == "negative_quantity"
    )
    lines = (demo_data_dir / "transactions.csv").read_text(encoding="utf-8").splitlines()
    raw_fields = lines[entry["line"] - 1].split(",")
    (raw_row,) = query(
        loaded_warehouse,
        "select raw_row from audit.quarantine where batch_id = 1"
        " and source_file = 'transactions.csv' and line_number = %s",
        (entry["line"],),
    )[0]
    assert raw_row["transaction_id"] == raw_fields[0]
    assert raw_row["quantity"] == raw_fields[3]
    assert int(raw_fields[3]) <= 0


def test_quarantined_rows_keep_every_raw_field(loaded_warehouse, demo_data_dir):
    expected = expected_warehouse(demo_data_dir)
    for file_name in ("customers.csv", "products.csv", "transactions.csv"):
        rows = dict(read_rows(demo_data_dir / file_name))
        stored = dict(
            query(
                loaded_warehouse,
                "select line_number, raw_row from audit.quarantine"
                " where batch_id = 1 and source_file = %s and disposition = 'rejected'",
                (file_name,),
            )
        )
        checked = 0
        for line, kind in expected.rejected[file_name]:
            if line not in rows:  # a malformed record: its raw text is kept instead
                continue
            # COPY reads an empty unquoted field as NULL.
            assert stored[line] == {k: v or None for k, v in rows[line].items()}, (file_name, kind)
            checked += 1
        assert checked > 0


def test_superseded_rows_name_the_line_that_replaced_them(loaded_warehouse, demo_data_dir):
    expected = expected_warehouse(demo_data_dir)
    for file_name in ("customers.csv", "products.csv", "transactions.csv"):
        rejected_lines = {line for line, _ in expected.rejected[file_name]}
        lines_of_key: dict[str, list[int]] = {}
        rows = dict(read_rows(demo_data_dir / file_name))
        key_column = next(iter(rows[min(rows)]))
        for line, row in rows.items():
            lines_of_key.setdefault(normalise(row[key_column]), []).append(line)
        details = dict(
            query(
                loaded_warehouse,
                "select line_number, detail from audit.quarantine"
                " where batch_id = 1 and source_file = %s and reason = 'duplicate_key'",
                (file_name,),
            )
        )
        superseded = {
            line for line, kind in expected.rejected[file_name] if kind == "duplicate_key"
        }
        assert set(details) == superseded
        for line in superseded:
            key = normalise(rows[line][key_column])
            winner = max(other for other in lines_of_key[key] if other not in rejected_lines)
            assert details[line] == f"superseded by line {winner}"


def test_batch_records_checksums_counts_and_reconciliation(loaded_warehouse, demo_data_dir):
    import hashlib

    ((files, counts, status),) = query(
        loaded_warehouse,
        "select source_files, row_counts, status from audit.load_batch where batch_id = 1",
    )
    assert status == "succeeded"
    for source in ("customers", "products", "transactions"):
        content = (demo_data_dir / f"{source}.csv").read_bytes()
        assert files[source]["sha256"] == hashlib.sha256(content).hexdigest()
        assert counts["landed"][source]["data_rows"] == content.count(b"\n") - 1
    checks = query(
        loaded_warehouse, "select check_name, passed from audit.reconciliation where batch_id = 1"
    )
    assert len(checks) >= 10
    assert all(passed for _, passed in checks)


def test_reloading_the_same_files_adds_nothing(small_database, small_data):
    settings = small_database
    base, _ = small_data
    run_batch(base, settings)
    before = vault_fingerprint(settings)

    report = run_batch(base, settings)

    assert vault_fingerprint(settings) == before
    assert set(report["row_counts"]["inserted"].values()) == {0}


def orders_of_late_arrivals(
    day1: ExpectedWarehouse, day2: ExpectedWarehouse
) -> tuple[list[str], list[str]]:
    """The day-1 orders loaded against the ghost record whose customer, and those whose
    product, day 2 delivers: they get a link to it then."""
    return (
        [
            key
            for key, order in day1.orders.items()
            if order["customer_key"] == GHOST_ID and order["customer_named"] in day2.customers
        ],
        [
            key
            for key, order in day1.orders.items()
            if order["product_key"] == GHOST_ID and order["product_named"] in day2.products
        ],
    )


def test_next_day_snapshot_adds_exactly_the_changes(small_database, small_data):
    settings = small_database
    base, next_day = small_data
    changes = json.loads((next_day / "changes.json").read_text())
    run_batch(base, settings)
    before = vault_counts(settings)

    run_batch(next_day, settings)

    after = vault_counts(settings)
    added = {table: after[table] - before[table] for table in VAULT_TABLES}
    day1, day2 = expected_warehouse(base), expected_warehouse(next_day)
    new_customers = set(day2.customers) - set(day1.customers)
    new_products = set(day2.products) - set(day1.products)
    relinked_to_customer, relinked_to_product = orders_of_late_arrivals(day1, day2)
    assert relinked_to_customer and relinked_to_product
    assert added["hub_customer"] == len(new_customers)
    assert added["sat_customer_details"] == len(changes["changed_customer_ids"]) + len(
        new_customers
    )
    assert added["hub_product"] == len(new_products)
    assert added["sat_product_details"] == len(changes["changed_product_ids"]) + len(new_products)
    assert added["hub_order"] == len(changes["new_order_ids"])
    assert added["sat_order_details"] == (
        len(changes["changed_order_ids"]) + len(changes["new_order_ids"])
    )
    # A new order gets its links; an order named a late arrival gets one to it.
    assert added["link_customer_order"] == len(changes["new_order_ids"]) + len(relinked_to_customer)
    assert added["link_order_product"] == len(changes["new_order_ids"]) + len(relinked_to_product)
    # The history view shows both versions of a changed customer, the old one end-dated.
    expected_now = expected_after_next_day(expected_warehouse(base), next_day)
    changed = changes["changed_customer_ids"][0]
    history = query(
        settings,
        "select city, customer_segment, email, is_current, valid_to is null"
        " from business_vault.vw_customer_history where customer_id = %s order by valid_from",
        (changed,),
    )
    assert len(history) == 2
    assert history[0][3:] == (False, False)
    assert history[1][3:] == (True, True)
    current = expected_now.customers[normalise(changed)]
    assert history[1][:3] == (current["city"], current["customer_segment"], current["email"])
    assert history[0][:3] != history[1][:3]


def test_next_day_updates_the_business_views(small_database, small_data):
    settings = small_database
    base, next_day = small_data
    changes = json.loads((next_day / "changes.json").read_text())
    run_batch(base, settings)
    run_batch(next_day, settings)
    expected = expected_after_next_day(expected_warehouse(base), next_day)

    order_id = changes["changed_order_ids"][0]
    ((status,),) = query(
        settings,
        "select order_status from business_vault.vw_order_analytics where order_id = %s",
        (order_id,),
    )
    assert status == expected.orders[order_id]["order_status"]
    product_id = changes["changed_product_ids"][0]
    ((price,),) = query(
        settings,
        "select unit_price from business_vault.vw_product_analytics where product_id = %s",
        (product_id,),
    )
    assert str(price) == expected.products[product_id]["unit_price"]
    ((customers,),) = query(settings, "select count(*) from business_vault.vw_customer_360")
    assert customers == len(expected.customers)
    # Every row of every view, after the next day rewrote only the orders it changed.
    assert_business_views_match(settings, expected)


@pytest.mark.parametrize(
    "schema_applied_again", [False, True], ids=["", "the business vault's schema applied again"]
)
def test_a_load_catches_up_the_views_of_a_batch_that_failed_before_its_refresh(
    small_database, small_data, schema_applied_again, tmp_path
):
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    # The next day reaches the vault, then its batch fails before the views are refreshed.
    batch_id = load_up_to_the_vault(next_day, settings)
    fail_batch(batch_id, "stopped before the views were refreshed", settings)
    if schema_applied_again:  # as after an upgrade, which fills the point-in-time tables
        sql_dir = tmp_path / "sql"
        shutil.copytree(schema_files()[0].parent, sql_dir)
        views = sql_dir / "04_create_views.sql"
        views.write_text(views.read_text(encoding="utf-8") + "\n-- edited\n", encoding="utf-8")
        migrate(settings, sql_dir)

    report = run_batch(next_day, settings)

    assert set(report["row_counts"]["inserted"].values()) == {0}
    assert_business_views_match(
        settings, expected_after_next_day(expected_warehouse(base), next_day)
    )


def test_a_load_catches_up_the_orders_a_failed_batch_changed_that_it_does_not_deliver(
    small_database, small_data
):
    """The orders a failed batch changed before its refresh, which the next batch does not
    deliver again, reach the views with the next batch's refresh."""
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    batch_id = load_up_to_the_vault(next_day, settings)
    fail_batch(batch_id, "stopped before the views were refreshed", settings)

    # Day 1 again: its orders, but none of the orders the next day added.
    run_batch(base, settings, reload=True)

    after_next_day = expected_after_next_day(expected_warehouse(base), next_day)
    assert set(after_next_day.orders) - set(expected_warehouse(base).orders)
    assert_business_views_match(settings, expected_after_next_day(after_next_day, base))


def test_a_refresh_that_runs_after_a_newer_batch_began_finds_its_orders_in_the_vault(
    small_database, small_data
):
    """A newer batch empties staging as it starts; a refresh of the batch before it (its
    Airflow task cleared and run again after the batch had failed) must still rewrite that
    batch's orders."""
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    batch_id = load_up_to_the_vault(next_day, settings)
    fail_batch(batch_id, "its refresh failed", settings)
    start_batch(next_day, settings)

    refresh_business_views(batch_id, settings)

    assert_business_views_match(
        settings, expected_after_next_day(expected_warehouse(base), next_day)
    )


def lose_and_overwrite_orders(settings, orders: dict) -> tuple[list[str], list[str]]:
    """Tamper with the vault after a batch's vault step: the first three orders (by id) lose
    their hub row, the next two get a newer satellite row with 100 more in total. Returns
    both lists of ids."""
    order_ids = sorted(orders)
    lost, overwritten = order_ids[:3], order_ids[3:5]
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute("delete from raw_vault.hub_order where order_id = any(%s)", (lost,))
        cur.execute(
            """
            insert into raw_vault.sat_order_details
            select sat.order_hk, sat.load_dts + interval '1 second', md5('changed')::uuid,
                   sat.record_source, sat.quantity, sat.unit_price, sat.discount,
                   sat.total_amount + 100, sat.transaction_ts, sat.payment_method,
                   sat.order_status
            from raw_vault.sat_order_details as sat
            join raw_vault.hub_order as hub using (order_hk)
            where hub.order_id = any(%s)
            """,
            (overwritten,),
        )
    conn.close()
    return lost, overwritten


@pytest.mark.parametrize(
    "refresh_first", [True, False], ids=["refresh ends first", "refresh starts after"]
)
@pytest.mark.parametrize("next_day", [False, True], ids=["first load", "next day"])
def test_after_a_failed_reconciliation_the_views_show_what_the_vault_holds(
    any_size_database, small_data, tmp_path, refresh_first, next_day
):
    """When reconciliation finds the vault holding something other than what was staged, the
    views show what the vault holds, whichever of refresh and reconciliation ran first,
    once the next batch is refreshed: after a first load, whose facts come from its staged
    rows, and after a next day, whose new orders' facts do."""
    settings = any_size_database
    base, next_delivery = small_data
    orders = expected_warehouse(base).orders
    tampered = orders
    if next_day:
        run_batch(base, settings)
        new_orders = expected_warehouse(next_delivery).orders
        tampered = {key: new_orders[key] for key in new_orders.keys() - orders.keys()}
        orders = {**orders, **new_orders}
        batch_id = load_up_to_the_vault(next_delivery, settings)
    else:
        batch_id = load_up_to_the_vault(base, settings)
    lost, overwritten = lose_and_overwrite_orders(settings, tampered)
    if refresh_first:
        refresh_business_views(batch_id, settings)
    with pytest.raises(ReconciliationError):
        reconcile(batch_id, settings)
    if not refresh_first:
        refresh_business_views(batch_id, settings)

    # A delivery of one new order, which touches none of the base's.
    run_batch(deliver(tmp_path / "one-order", transactions=[order("T-NEW")]), settings)

    totals = dict(query(settings, "select order_id, total_amount from business_vault.order_facts"))
    assert set(totals) == (set(orders) - set(lost)) | {"T-NEW"}
    for order_id in overwritten:
        assert totals[order_id] == orders[order_id]["total"] + 100


def test_a_first_load_takes_its_order_facts_from_the_staged_rows_the_vault_holds(
    small_database, small_data
):
    """A first load fills the order facts from its staged rows instead of searching the vault
    for each order's latest rows: they are exactly what the vault gives, ghost links
    included. The next day's refresh takes the facts of the orders it staged from its staged
    rows too, and those of the orders it did not stage (customers and products arriving
    late) from the vault: the facts stay in step with the vault."""
    settings = small_database
    base, next_day = small_data
    first = run_batch(base, settings)["batch_id"]
    assert query(settings, "select filled_from_batch from business_vault.order_facts_state") == [
        (first,)
    ]
    ghost_linked = query(
        settings,
        "select count(*) from business_vault.order_facts"
        " where customer_id is null or product_id is null",
    )
    assert ghost_linked[0][0] > 0

    def facts_differing_from_the_vault() -> list[tuple]:
        return query(
            settings,
            """
            (select * from business_vault.order_facts
             except all select * from business_vault.order_facts_from_vault(null))
            union all
            (select * from business_vault.order_facts_from_vault(null)
             except all select * from business_vault.order_facts)
            """,
        )

    assert facts_differing_from_the_vault() == []
    second = run_batch(next_day, settings)["batch_id"]
    assert query(settings, "select filled_from_batch from business_vault.order_facts_state") == [
        (second,)
    ]
    assert facts_differing_from_the_vault() == []


def load_with_a_failing_hub_row(settings, data_dir: Path, hub: str, key: str) -> None:
    """Load a delivery whose hubs step fails on one key of one hub, as a failure of the hubs
    step would, after the links and satellites loaded beside it have committed."""
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"""
            create function raw_vault.refuse_key() returns trigger language plpgsql as $$
            begin raise exception 'the hub load failed'; end $$;
            create trigger refuse_key before insert on raw_vault.hub_{hub}
            for each row when (new.{hub}_id = %s) execute function raw_vault.refuse_key();
            """,
            (key,),
        )
    try:
        with pytest.raises(psycopg2.Error, match="the hub load failed"):
            run_batch(data_dir, settings)
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("drop function raw_vault.refuse_key() cascade")
        conn.close()


@pytest.mark.parametrize("hub", ["customer", "product"])
def test_an_order_linked_to_a_hub_row_a_failed_batch_left_out_reaches_the_views_with_it(
    any_size_database, tmp_path, hub
):
    """Hubs, links and satellites load side by side. When the hubs fail after the links
    committed, an order moved to a new customer (or product) points at a hub row that is not
    there, and drops out of the views at the next refresh; it is back once a later batch
    brings that hub row, though no batch delivers the order again."""
    settings = any_size_database
    first_orders = load_twelve_orders(tmp_path / "day1", settings)
    new = {"customer": {"customer_id": "C2"}, "product": {"product_id": "P2"}}[hub]
    new_key = next(iter(new.values()))
    new_row = customer(new_key) if hub == "customer" else product(new_key)
    moved = deliver(tmp_path / "day2", **{f"{hub}s": [new_row]}, transactions=[order("T01", **new)])
    load_with_a_failing_hub_row(settings, moved, hub, new_key)
    run_batch(deliver(tmp_path / "day3", transactions=[order("T13")]), settings)
    assert query(settings, "select 1 from business_vault.order_facts where order_id = 'T01'") == []

    # The new key arrives; T01 is not delivered again.
    run_batch(
        deliver(tmp_path / "day4", **{f"{hub}s": [new_row]}, transactions=[order("T14", **new)]),
        settings,
    )

    orders = (
        "select order_id, customer_id, product_id from business_vault.vw_order_analytics order by 1"
    )
    moved_orders = {"T01", "T14"}
    expected = [
        (order_id, new.get("customer_id", "C1"), new.get("product_id", "P1"))
        if order_id in moved_orders
        else (order_id, "C1", "P1")
        for order_id in sorted([*first_orders, "T13", "T14"])
    ]
    assert query(settings, orders) == expected


def test_an_order_whose_hub_row_a_failed_batch_left_out_reaches_the_views_when_delivered_again(
    any_size_database, tmp_path
):
    """An order whose satellite and links committed while its hub row failed is out of the
    views; delivered again unchanged, it adds only its hub row, and that brings it back."""
    settings = any_size_database
    first_orders = load_twelve_orders(tmp_path / "day1", settings)
    late = [order("T13", total="13.00")]
    load_with_a_failing_hub_row(
        settings, deliver(tmp_path / "day2", transactions=late), "order", "T13"
    )
    run_batch(deliver(tmp_path / "day3", transactions=[order("T14")]), settings)
    assert query(settings, "select 1 from business_vault.order_facts where order_id = 'T13'") == []

    report = run_batch(deliver(tmp_path / "day4", transactions=[*late, order("T15")]), settings)

    # T13 adds its hub row alone; T15, new, adds its satellite row too.
    assert report["row_counts"]["inserted"]["hub_order"] == 2
    assert report["row_counts"]["inserted"]["sat_order_details"] == 1
    totals = "select order_id, total_amount from business_vault.vw_order_analytics order by 1"
    expected = {order_id: Decimal("10.00") for order_id in [*first_orders, "T14", "T15"]}
    assert query(settings, totals) == sorted((expected | {"T13": Decimal("13.00")}).items())


def test_a_late_customer_whose_link_a_failed_batch_left_takes_its_order_back(
    any_size_database, tmp_path
):
    """T2's link to C9 committed while C9's hub row failed; delivered again before C9
    arrived, T2 went to the ghost. When C9 arrives, the link it has is delivered again."""
    settings = any_size_database
    run_batch(deliver(tmp_path / "day1", transactions=[order("T1")]), settings)
    to_c9 = [order("T2", customer_id="C9")]
    load_with_a_failing_hub_row(
        settings,
        deliver(tmp_path / "day2", customers=[customer("C9")], transactions=to_c9),
        "customer",
        "C9",
    )
    run_batch(deliver(tmp_path / "day3", transactions=[*to_c9, order("T3")]), settings)
    current = "select customer_id from business_vault.vw_order_analytics where order_id = 'T2'"
    assert query(settings, current) == [(None,)]

    report = run_batch(
        deliver(tmp_path / "day4", customers=[customer("C9")], transactions=[order("T4")]),
        settings,
    )

    assert query(settings, current) == [("C9",)]
    assert report["row_counts"]["inserted"]["sat_customer_order_effectivity"] == 1


def test_the_links_step_reads_no_hub_so_it_never_waits_for_the_hubs_step(
    small_database, small_data, monkeypatch
):
    """Hubs and links load side by side; a bulk hubs step holds its tables locked until it
    commits. The links step, run while another session holds them, must finish rather
    than wait (a lock wait here fails it after five seconds)."""
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    batch_id = start_batch(next_day, settings)
    for source in SOURCE_NAMES:
        load_staging(batch_id, source, settings)
    check_staging(batch_id, settings)
    holder = psycopg2.connect(settings.dsn)
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=5000")
    try:
        with holder.cursor() as cur:
            cur.execute(
                "lock table raw_vault.hub_customer, raw_vault.hub_product, raw_vault.hub_order"
                " in access exclusive mode"
            )
        inserted = load_links(batch_id, settings)
    finally:
        holder.rollback()
        holder.close()

    assert inserted["link_customer_order"] > 0


def vault_index_oids(settings) -> dict[str, set[int]]:
    """The object ids of each vault table's indexes: a rebuilt index gets a new one."""
    oids: dict[str, set[int]] = {}
    for table, oid in query(
        settings,
        "select indrelid::regclass::text, indexrelid::int from pg_index"
        " where indrelid::regclass::text like 'raw_vault.%%'",
    ):
        oids.setdefault(table.removeprefix("raw_vault."), set()).add(oid)
    return oids


def test_a_batch_larger_than_the_vault_loads_in_bulk_onto_its_history(make_database, small_data):
    """The day-1 files loaded on top of the next-day delivery, which holds every customer and
    product but only some orders: the order tables take the bulk path (their indexes are
    rebuilt), with rows and history already there, and the vault ends as after the two loads
    in the usual order, with the day-1 values current."""
    thresholds = {"min_customers": 100, "min_products": 10, "min_transactions": 100}
    usual, reversed_order = (make_database().model_copy(update=thresholds) for _ in range(2))
    base, next_day = small_data
    run_batch(base, usual)
    run_batch(next_day, usual)
    run_batch(next_day, reversed_order)
    indexes_before = vault_index_oids(reversed_order)

    run_batch(base, reversed_order)

    indexes_after = vault_index_oids(reversed_order)
    assert {table: len(oids) for table, oids in indexes_after.items()} == {
        table: len(oids) for table, oids in indexes_before.items()
    }
    # (Whether the customer and product tables, about as large as their batch, are loaded in
    # bulk depends on row estimates that autovacuum may refresh meanwhile: not asserted.)
    for table in ("hub_order", "link_customer_order", "link_order_product", "sat_order_details"):
        assert not indexes_after[table] & indexes_before[table], table
    # In the usual order, the day-1 orders of customers and products that only arrived the
    # next day keep their first link, to the ghost record, in their history.
    to_customer, to_product = orders_of_late_arrivals(
        expected_warehouse(base), expected_warehouse(next_day)
    )
    counts = vault_counts(reversed_order)
    counts["link_customer_order"] += len(to_customer)
    counts["link_order_product"] += len(to_product)
    assert counts == vault_counts(usual)
    assert_business_views_match(
        reversed_order, expected_after_next_day(expected_warehouse(next_day), base)
    )


@pytest.mark.parametrize("first_load", [True, False], ids=["first load", "next day"])
def test_reconciliation_catches_what_did_not_reach_the_vault(
    small_database, small_data, first_load
):
    """Orders missing from the hub and satellites whose latest row is not the staged one
    fail the batch, with the counts and amounts the files give (found set-wise in a first
    load, by index probes in a small next-day batch)."""
    settings = small_database
    base, next_day = small_data
    if not first_load:
        run_batch(base, settings)
    data_dir = base if first_load else next_day
    orders = expected_warehouse(data_dir).orders
    batch_id = load_up_to_the_vault(data_dir, settings)
    lose_and_overwrite_orders(settings, orders)

    with pytest.raises(ReconciliationError):
        reconcile(batch_id, settings)

    checks = {
        name: (float(expected), float(actual), passed)
        for name, expected, actual, passed in query(
            settings,
            "select check_name, expected, actual, passed from audit.reconciliation"
            " where batch_id = %s",
            (batch_id,),
        )
    }
    staged = float(len(orders))
    total = float(sum(order["total"] for order in orders.values()))
    assert checks["hub_order_has_every_staged_order"] == (staged, staged - 3, False)
    assert checks["sat_order_details_current_for_every_staged_order"] == (
        staged,
        staged - 2,
        False,
    )
    assert checks["order_amount_total_matches_staging"] == (total, total + 200, False)
    assert checks["link_customer_order_has_every_staged_order"] == (staged, staged, True)
    ((status,),) = query(
        settings, "select status from audit.load_batch where batch_id = %s", (batch_id,)
    )
    assert status == "failed"


def failed_reconciliation_checks(batch_id: int, settings) -> dict[str, tuple[float, float]]:
    """Reconcile a batch whose vault was tampered with: it fails; returns each check's
    (expected, actual)."""
    with pytest.raises(ReconciliationError):
        reconcile(batch_id, settings)
    return {
        name: (float(expected), float(actual))
        for name, expected, actual in query(
            settings,
            "select check_name, expected, actual from audit.reconciliation where batch_id = %s",
            (batch_id,),
        )
    }


def change_order_payload_in_place(cur, order_id: str) -> None:
    """Give the order's satellite row another payload (100 more in total) without a new row."""
    cur.execute(
        """
        update raw_vault.sat_order_details as sat
        set total_amount = total_amount + 100, hashdiff = md5('changed')::uuid
        from raw_vault.hub_order as hub
        where hub.order_hk = sat.order_hk and hub.order_id = %s
        """,
        (order_id,),
    )


def test_reconciliation_of_a_first_load_catches_satellite_rows_changed_in_place(
    small_database, small_data
):
    """When every satellite row comes from one load, reconciliation reads each key's only row
    without sorting the satellite: a row whose payload was changed, and one that is missing,
    still fail the batch with the amounts the files give."""
    settings = small_database
    base, _ = small_data
    orders = expected_warehouse(base).orders
    batch_id = load_up_to_the_vault(base, settings)
    changed, missing = sorted(orders)[:2]
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        change_order_payload_in_place(cur, changed)
        cur.execute(
            """
            delete from raw_vault.sat_order_details as sat
            using raw_vault.hub_order as hub
            where hub.order_hk = sat.order_hk and hub.order_id = %s
            """,
            (missing,),
        )
    conn.close()

    checks = failed_reconciliation_checks(batch_id, settings)
    staged = float(len(orders))
    total = sum(order["total"] for order in orders.values())
    assert checks["sat_order_details_current_for_every_staged_order"] == (staged, staged - 2)
    assert checks["order_amount_total_matches_staging"] == (
        float(total),
        float(total + 100 - orders[missing]["total"]),
    )


def test_reconciliation_of_a_first_load_by_hash_totals_and_when_they_differ(
    small_database, small_data
):
    """A first load's vault holds exactly the staged rows: row counts and hash totals give
    every count and the amount total the files give. Rows replaced by others in place keep
    the counts but not the totals, and the joins then count each replaced row as missing."""
    settings = small_database
    base, _ = small_data
    orders = expected_warehouse(base).orders
    batch_id = load_up_to_the_vault(base, settings)
    staged = len(orders)
    total = sum(order["total"] for order in orders.values())
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        counts = counts_by_hash_totals(cur, SOURCES["transactions"], batch_id)
    assert counts == {
        "staged": staged,
        "hub_order_has_every_staged_order": staged,
        "link_customer_order_has_every_staged_order": staged,
        "link_order_product_has_every_staged_order": staged,
        "satellite_current": staged,
        "staged_amount": total,
        "vault_amount": total,
    }
    in_hub, in_link, in_satellite = sorted(orders)[:3]
    with conn, conn.cursor() as cur:
        for table, column, order_id in (
            ("hub_order", "order_hk", in_hub),
            ("link_customer_order", "customer_order_hk", in_link),
        ):
            cur.execute(
                f"""
                update raw_vault.{table} as vault set {column} = md5('another ' || %s)::uuid
                from raw_vault.hub_order as hub
                where hub.order_hk = vault.order_hk and hub.order_id = %s
                """,
                (order_id, order_id),
            )
        change_order_payload_in_place(cur, in_satellite)
        assert counts_by_hash_totals(cur, SOURCES["transactions"], batch_id) is None
    conn.close()

    checks = failed_reconciliation_checks(batch_id, settings)
    assert checks["hub_order_has_every_staged_order"] == (staged, staged - 1)
    assert checks["link_customer_order_has_every_staged_order"] == (staged, staged - 1)
    assert checks["link_order_product_has_every_staged_order"] == (staged, staged)
    assert checks["sat_order_details_current_for_every_staged_order"] == (staged, staged - 1)
    assert checks["order_amount_total_matches_staging"] == (float(total), float(total + 100))


@pytest.mark.parametrize("first_load", [True, False], ids=["first load", "next day"])
def test_a_load_whose_vault_differs_from_staging_fails_once_its_views_are_rebuilt(
    small_database, small_data, first_load
):
    """The CLI reconciles beside the refresh (all through it for a first load, beside the
    views otherwise): a failed reconciliation fails the batch, after the views were rebuilt."""
    settings = small_database
    base, next_day = small_data
    if not first_load:
        run_batch(base, settings)
    data_dir = base if first_load else next_day
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            create function raw_vault.add_to_total() returns trigger language plpgsql as $$
            begin new.total_amount := new.total_amount + 1; return new; end $$;
            create trigger add_to_total before insert on raw_vault.sat_order_details
            for each row execute function raw_vault.add_to_total();
            """
        )
    try:
        with pytest.raises(ReconciliationError, match="order_amount_total_matches_staging"):
            run_batch(data_dir, settings)
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("drop function raw_vault.add_to_total() cascade")
        conn.close()

    ((batch_id, status),) = query(
        settings, "select batch_id, status from audit.load_batch order by batch_id desc limit 1"
    )
    assert status == "failed"
    # The facts of the orders the batch staged are its staged rows, until the next refresh
    # refills them from the vault (see the test above); the others' show what the vault holds.
    source = f"""(
        select * from business_vault.order_facts_from_staging({batch_id})
        union all
        select * from business_vault.order_facts_from_vault(null) as vault
        where vault.order_hk not in (
            select order_hk from staging.stg_transactions where batch_id = {batch_id}
        )
    ) as expected"""
    differing = query(
        settings,
        f"""
        (select * from business_vault.order_facts except all select * from {source})
        union all
        (select * from {source} except all select * from business_vault.order_facts)
        """,
    )
    assert differing == []
    assert query(settings, "select count(*) from business_vault.order_facts")[0][0] > 0


def test_indexes_a_stopped_bulk_load_left_dropped_are_built_by_the_next_batch(
    small_database, small_data
):
    settings = small_database
    base, _ = small_data
    run_batch(base, settings)
    definitions = "select indexdef from pg_indexes where tablename = 'order_facts' order by 1"
    before = query(settings, definitions)
    # A refresh that stopped after refilling the facts, before building their indexes.
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute("call raw_vault.drop_indexes('business_vault.order_facts')")
    conn.close()
    assert query(settings, definitions) == []

    run_batch(base, settings)

    assert len(before) == 3
    assert query(settings, definitions) == before
    assert query(settings, "select count(*) from audit.dropped_indexes") == [(0,)]


def assert_business_views_match(settings, expected) -> None:
    """Every row of the order, customer and product views is what the files say."""
    conn = psycopg2.connect(settings.dsn)
    try:
        with conn.cursor() as cursor:
            assert_order_analytics_matches(cursor, expected)
            assert_customer_360_matches(cursor, expected)
            assert_product_analytics_matches(cursor, expected)
    finally:
        conn.close()


def test_a_row_with_the_ghost_records_key_is_quarantined(small_database, small_data, tmp_path):
    base, _ = small_data
    data = tmp_path / "data"
    shutil.copytree(base, data)
    lines = {}
    for source, row in (
        ("customers", " -1 ,Ghost,Row,ghost@example.net,,Leeds,England,United Kingdom,2024-01-02,"),
        ("products", "-1,Ghost Product,Tools,Acme,1.00,0.50"),
    ):
        path = data / f"{source}.csv"
        text = path.read_text(encoding="utf-8")
        path.write_text(text + row + "\n", encoding="utf-8")
        lines[source] = text.count("\n") + 1

    run_batch(data, small_database)

    assert query(
        small_database,
        "select source, line_number, reason from audit.quarantine where btrim(business_key) = '-1'"
        " order by source",
    ) == [
        ("customers", lines["customers"], "reserved_key"),
        ("products", lines["products"], "reserved_key"),
    ]
    assert query(
        small_database,
        "select record_source from raw_vault.hub_customer where customer_id = '-1'"
        " union all select record_source from raw_vault.hub_product where product_id = '-1'",
    ) == [("SYSTEM",), ("SYSTEM",)]


def test_a_breached_threshold_fails_the_batch_and_leaves_the_vault_unchanged(
    small_database, small_data
):
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    before = vault_fingerprint(settings)
    strict = settings.model_copy(update={"min_transactions": 1_000_000})

    with pytest.raises(ThresholdBreachedError, match="transactions"):
        run_batch(next_day, strict)

    assert vault_fingerprint(settings) == before
    ((status, message),) = query(
        settings, "select status, message from audit.load_batch order by batch_id desc limit 1"
    )
    assert status == "failed"
    assert "at least 1,000,000 required" in message


def test_files_an_earlier_batch_loaded_are_refused_once_a_later_batch_loaded_others(
    small_database, small_data
):
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    run_batch(next_day, settings)
    before = vault_fingerprint(settings)
    batches = query(settings, "select batch_id, status from audit.load_batch order by batch_id")

    with pytest.raises(SupersededFilesError, match="those batch 1 loaded .* batch 2 has loaded"):
        run_batch(base, settings)

    assert vault_fingerprint(settings) == before
    assert query(settings, "select batch_id, status from audit.load_batch order by batch_id") == (
        batches
    )
    # Asked for, they load: the day-1 values are current again.
    run_batch(base, settings, reload=True)
    product_id = json.loads((next_day / "changes.json").read_text())["changed_product_ids"][0]
    ((price,),) = query(
        settings,
        "select unit_price from business_vault.vw_product_analytics where product_id = %s",
        (product_id,),
    )
    assert str(price) == expected_warehouse(base).products[product_id]["unit_price"]


def test_files_are_refused_too_after_a_later_batch_that_failed_after_its_vault_load(
    small_database, small_data
):
    settings = small_database
    base, next_day = small_data
    run_batch(base, settings)
    # The next day reaches the vault, then fails (as at a failed reconciliation).
    fail_batch(load_up_to_the_vault(next_day, settings), "stopped by the test", settings)
    before = vault_fingerprint(settings)

    with pytest.raises(SupersededFilesError, match="those batch 1 loaded .* batch 2 has loaded"):
        run_batch(base, settings)

    assert vault_fingerprint(settings) == before


def test_a_second_batch_is_refused_while_one_is_loading(small_database, small_data):
    from customer360.errors import BatchInProgressError
    from customer360.pipeline import fail_batch, start_batch

    settings = small_database
    base, _ = small_data
    running = start_batch(base, settings)

    with pytest.raises(BatchInProgressError, match=f"batch {running} has been loading"):
        run_batch(base, settings)

    fail_batch(running, "stopped by the test", settings)
    run_batch(base, settings)
    ((statuses,),) = query(
        settings, "select array_agg(status order by batch_id) from audit.load_batch"
    )
    assert statuses == ["failed", "succeeded"]
