"""The quality rules and the vault's history on small hand-written deliveries: each file is
written here line by line, so every expected value is read off the lines themselves."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from customer360.errors import UserFacingError
from customer360.pipeline import load_links, run_batch
from customer360.quality import ThresholdBreachedError
from tests.database_state import query
from tests.deliveries import customer, deliver, order, product


@pytest.fixture
def database(make_database):
    """A fresh database that takes deliveries of any size."""
    return make_database().model_copy(
        update={"min_customers": 0, "min_products": 0, "min_transactions": 0}
    )


def quarantined(settings, source: str) -> dict[int, tuple[str, str]]:
    """The latest batch's quarantined rows of ``source``: line -> (reason, detail)."""
    rows = query(
        settings,
        "select line_number, reason, detail from audit.quarantine"
        " where source = %s and batch_id = (select max(batch_id) from audit.load_batch)",
        (source,),
    )
    return {line: (reason, detail) for line, reason, detail in rows}


def reasons(settings, source: str) -> dict[int, str]:
    """The latest batch's quarantined rows of ``source``: line -> reason."""
    return {line: reason for line, (reason, _) in quarantined(settings, source).items()}


def test_the_last_line_wins_even_when_it_repeats_an_earlier_one(database, tmp_path):
    first, second = customer("C1", city="York"), customer("C1", city="Hull")
    deliver(tmp_path / "day1", customers=[first, second, first])

    run_batch(tmp_path / "day1", database)

    # Lines 2, 3 and 4: York, Hull, York. The file's last word on C1 is York.
    assert query(
        database,
        "select city from business_vault.vw_customer_360 where customer_id = 'C1'",
    ) == [("York",)]
    assert quarantined(database, "customers") == {
        2: ("duplicate_row", "exact copy of line 4"),
        3: ("duplicate_key", "superseded by line 4"),
    }


def test_a_missing_discount_and_a_zero_one_are_the_same_version(database, tmp_path):
    deliver(tmp_path / "day1", transactions=[order("T1", discount="")])
    deliver(tmp_path / "day2", transactions=[order("T1", discount="0.00"), order("T2")])

    run_batch(tmp_path / "day1", database)
    run_batch(tmp_path / "day2", database)

    versions = query(
        database,
        "select sat.discount from raw_vault.sat_order_details as sat"
        " join raw_vault.hub_order as hub using (order_hk) where hub.order_id = 'T1'",
    )
    assert [str(discount) for (discount,) in versions] == ["0.0000"]


def test_a_configured_date_format_refuses_what_does_not_fit_it(database, tmp_path):
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n"
        "  customers:\n"
        "    formats:\n"
        "      signup_date: DD/MM/YYYY\n"
        "  transactions:\n"
        "    formats:\n"
        "      transaction_ts: DD.MM.YYYY HH24:MI\n",
        encoding="utf-8",
    )
    settings = database.model_copy(update={"sources_config": config})
    deliver(
        tmp_path / "day1",
        customers=[
            customer("C1", signup="05/05/2023"),
            customer("C2", signup="5/5/23"),
            customer("C3", signup="17/05/2023 oops"),
        ],
        transactions=[
            order("T1", ts="17.05.2023 10:30"),
            order("T2", ts="17.05.2023"),
            order("T3", ts="17.05.23 10:30"),
        ],
    )

    run_batch(tmp_path / "day1", settings)

    assert reasons(settings, "customers") == {
        3: "invalid_date",
        4: "invalid_date",
    }
    assert reasons(settings, "transactions") == {
        3: "invalid_date",
        4: "invalid_date",
    }
    assert query(
        settings,
        "select signup_date::text from business_vault.vw_customer_360 where customer_id = 'C1'",
    ) == [("2023-05-05",)]
    assert query(
        settings,
        "select (transaction_ts at time zone 'UTC')::text from business_vault.vw_order_analytics",
    ) == [("2023-05-17 10:30:00",)]


def test_iso_dates_refuse_eras_words_and_a_twelve_hour_clock(database, tmp_path):
    deliver(
        tmp_path / "day1",
        customers=[customer("C1"), customer("C2", signup="2024-1-1BC")],
        transactions=[
            order("T1", ts="2025-01-01T10:00:00+02:00"),
            order("T2", ts="2025-01-01 10:00:00 BC"),
            order("T3", ts="2025-01-01 10:00:00 PM"),
            order("T4", ts="2025-01-01 allballs"),
            order("T5", ts="2025-01-01 10:00:00.25"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    assert reasons(database, "customers") == {3: "invalid_date"}
    assert reasons(database, "transactions") == {
        3: "invalid_date",
        4: "invalid_date",
        5: "invalid_date",
    }
    assert query(
        database,
        "select order_id, (transaction_ts at time zone 'UTC')::text"
        " from business_vault.vw_order_analytics order by order_id",
    ) == [("T1", "2025-01-01 08:00:00"), ("T5", "2025-01-01 10:00:00.25")]


def test_required_values_and_unknown_statuses_are_quarantined(database, tmp_path):
    deliver(
        tmp_path / "day1",
        customers=[customer("C1"), "C2,Ann,Lee, ,,Leeds,,,,"],
        products=[product("P1"), product("P2", category="")],
        transactions=[
            order("T1"),
            order("T2", status=""),
            order("T3", status="refunded"),
            order("T4", customer_id=" "),
            order("T5", status="Shipped"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "customers") == {3: ("missing_value", "no value for email")}
    assert quarantined(database, "products") == {3: ("missing_value", "no value for category")}
    assert quarantined(database, "transactions") == {
        3: ("missing_value", "no value for order_status"),
        4: (
            "invalid_value",
            "order_status 'refunded' is not one of completed, shipped, pending, cancelled,"
            " returned",
        ),
        5: ("missing_key", "no value for customer_id"),
    }
    assert query(
        database,
        "select order_id, order_status from business_vault.vw_order_analytics order by order_id",
    ) == [("T1", "completed"), ("T5", "shipped")]


def test_an_order_moved_to_another_customer_and_back_belongs_to_the_first_again(database, tmp_path):
    customers = [customer("C1"), customer("C2")]
    products = [product("P1", category="Tools"), product("P2", category="Toys")]
    deliveries = [("C1", "P1"), ("C2", "P2"), ("C1", "P1")]
    for day, (customer_id, product_id) in enumerate(deliveries, start=1):
        # A second order, different each day, keeps every day's files distinct.
        transactions = [
            order("T1", customer_id, product_id, total="20.00"),
            order(f"X{day}", "C2", "P2", total="1.00"),
        ]
        folder = deliver(tmp_path / f"day{day}", customers, products, transactions)
        report = run_batch(folder, database)

        assert query(
            database,
            "select customer_id, product_id, category"
            " from business_vault.vw_order_analytics where order_id = 'T1'",
        ) == [(customer_id, product_id, "Tools" if product_id == "P1" else "Toys")]
        # C2 has one X order of 1.00 from each day so far, and T1 when it is C2's.
        values = dict(
            query(
                database,
                "select customer_id, lifetime_value from business_vault.vw_customer_360",
            )
        )
        t1_on_c2 = 20 if customer_id == "C2" else 0
        assert values == {"C1": 20 - t1_on_c2, "C2": day + t1_on_c2}

    # The relationships: two links for T1 each way, and one return recorded on each.
    assert query(
        database,
        "select (select count(*) from raw_vault.sat_customer_order_effectivity),"
        " (select count(*) from raw_vault.sat_order_product_effectivity)",
    ) == [(1, 1)]
    # A retried links step of the last batch, and the same files again, change nothing.
    load_links(report["batch_id"], database)
    run_batch(tmp_path / "day3", database)
    assert query(
        database,
        "select (select count(*) from raw_vault.sat_customer_order_effectivity),"
        " customer_id from business_vault.vw_order_analytics where order_id = 'T1'",
    ) == [(1, "C1")]


def test_a_number_with_more_decimal_places_than_its_column_keeps_is_refused(database, tmp_path):
    deliver(
        tmp_path / "day1",
        products=[
            product("P1"),
            "P2,Thing,Tools,Acme,10.005,4.00",
            "P3,Thing,Tools,Acme,10.50,4.1000",
        ],
        transactions=[
            order("T1", discount="0.1250", total="10.00"),
            order("T2", discount="0.12345"),
            order("T3", total="9.999"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "products") == {
        3: ("invalid_number", "unit_price '10.005' has more than 2 decimal places")
    }
    assert quarantined(database, "transactions") == {
        3: ("invalid_number", "discount '0.12345' has more than 4 decimal places"),
        4: (
            "invalid_number",
            "unit_price '9.999' has more than 2 decimal places,"
            " total_amount '9.999' has more than 2 decimal places",
        ),
    }
    assert query(
        database,
        "select product_id, unit_price::text, cost::text"
        " from business_vault.vw_product_analytics order by product_id",
    ) == [("P1", "10.00", "4.00"), ("P3", "10.50", "4.10")]


def test_a_key_longer_than_the_warehouse_indexes_is_refused_and_the_rest_loads(database, tmp_path):
    # Random letters do not compress: 3,000 of them are more than a B-tree entry holds.
    too_long = "".join(random.Random(7).choices(string.ascii_uppercase, k=3000))
    longest = "K" * 100
    deliver(
        tmp_path / "day1",
        customers=[customer("C1"), customer(too_long), customer(f"  {longest.lower()} ")],
        products=[product("P1"), product("P" * 101)],
        transactions=[order("T1"), order("T" * 101), order("T2", customer_id=longest)],
    )

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "customers") == {
        3: ("invalid_key", "customer_id is 3000 characters long; a key has at most 100")
    }
    assert quarantined(database, "products") == {
        3: ("invalid_key", "product_id is 101 characters long; a key has at most 100")
    }
    assert quarantined(database, "transactions") == {
        3: ("invalid_key", "transaction_id is 101 characters long; a key has at most 100")
    }
    assert query(
        database,
        "select order_id, customer_id from business_vault.vw_order_analytics order by order_id",
    ) == [("T1", "C1"), ("T2", longest)]


def test_a_text_value_too_long_for_the_views_indexes_is_refused_and_the_rest_loads(
    database, tmp_path
):
    # The e-mail is indexed by the customer view; 3,000 random letters would not fit an entry.
    long_email = "".join(random.Random(8).choices(string.ascii_lowercase, k=3000)) + "@x.net"
    longest_city = "Y" * 255
    deliver(
        tmp_path / "day1",
        customers=[
            customer("C1", city=longest_city),
            customer("C2", email=long_email),
            customer("C3", city="Z" * 256),
        ],
        products=[product("P1"), product("P2", category="T" * 256)],
        transactions=[order("T1"), f"T2,C1,P1,1,10.00,0.00,10.00,2025-03-01,{'p' * 256},shipped"],
    )

    run_batch(tmp_path / "day1", database)

    limit = "; a value has at most 255"
    assert quarantined(database, "customers") == {
        3: ("invalid_value", f"email is {len(long_email)} characters long{limit}"),
        4: ("invalid_value", f"city is 256 characters long{limit}"),
    }
    assert quarantined(database, "products") == {
        3: ("invalid_value", f"category is 256 characters long{limit}")
    }
    assert quarantined(database, "transactions") == {
        3: ("invalid_value", f"payment_method is 256 characters long{limit}")
    }
    assert query(database, "select customer_id, city from business_vault.vw_customer_360") == [
        ("C1", longest_city)
    ]


def test_sums_beyond_any_single_orders_range_load_whole(database, tmp_path):
    # Each row is within the contract; their sums are not within an order's numeric(14, 2).
    biggest_total = "999999999999.00"
    deliver(
        tmp_path / "day1",
        products=["P1,Thing,Tools,Acme,1000.00,1000.00"],
        transactions=[
            "T1,C1,P1,2000000000,1000.00,,10.00,2025-03-01 10:00:00,paypal,completed",
            f"T2,C1,P1,1,1000.00,,{biggest_total},2025-03-01 10:00:00,paypal,completed",
            f"T3,C1,P1,1,1000.00,,{biggest_total},2025-03-01 10:00:00,paypal,completed",
        ],
    )

    run_batch(tmp_path / "day1", database)

    lifetime_value = Decimal("10.00") + 2 * Decimal(biggest_total)
    units = 2_000_000_000 + 1 + 1
    assert query(database, "select lifetime_value from business_vault.vw_customer_360") == [
        (lifetime_value,)
    ]
    assert query(
        database, "select units_sold, revenue, margin from business_vault.vw_product_analytics"
    ) == [(units, lifetime_value, lifetime_value - units * Decimal("1000.00"))]


def test_a_key_holding_a_bar_is_refused_so_composite_keys_cannot_collide(database, tmp_path):
    # Customer 'A||B' with order 'C' and customer 'A' with order 'B||C' would both give the
    # link key md5('A||B||C'); 'A|' with 'B' and 'A' with '|B' would both give 'A|||B'.
    deliver(
        tmp_path / "day1",
        customers=[customer("A||B"), customer("A"), customer("A|")],
        transactions=[
            order("C", customer_id="A||B"),
            order("B||C", customer_id="A"),
            order("B", customer_id="A|"),
            order("|B", customer_id="A"),
            order("T1", customer_id="A"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    holds_a_bar = "holds |, which separates the parts of composite keys"
    assert quarantined(database, "customers") == {
        2: ("invalid_key", f"customer_id 'A||B' {holds_a_bar}"),
        4: ("invalid_key", f"customer_id 'A|' {holds_a_bar}"),
    }
    assert quarantined(database, "transactions") == {
        2: (
            "unknown_customer",
            "customer 'A||B' is not in the customer hub (its row in this delivery was"
            " quarantined: invalid_key); linked to the ghost record",
        ),
        3: ("invalid_key", f"transaction_id 'B||C' {holds_a_bar}"),
        4: (
            "unknown_customer",
            "customer 'A|' is not in the customer hub (its row in this delivery was"
            " quarantined: invalid_key); linked to the ghost record",
        ),
        5: ("invalid_key", f"transaction_id '|B' {holds_a_bar}"),
    }
    assert query(
        database,
        "select order_id, customer_id from business_vault.vw_order_analytics order by order_id",
    ) == [("B", None), ("C", None), ("T1", "A")]


def test_every_change_of_a_value_is_a_new_version_whatever_characters_it_holds(database, tmp_path):
    header_and = "{},{},{},{},{},Leeds,England,United Kingdom,2024-01-02,Consumer"
    deliver(
        tmp_path / "day1",
        customers=[
            header_and.format("C1", "Ann||Lee", "X", "c1@example.net", ""),
            header_and.format("C2", "Bo", "Li", "c2@example.net", "^^"),
            header_and.format("C3", "Cy", "Lo\\", "c3@example.net", "|x"),
        ],
    )
    deliver(
        tmp_path / "day2",
        customers=[
            header_and.format("C1", "Ann", "Lee||X", "c1@example.net", ""),
            header_and.format("C2", "Bo", "Li", "c2@example.net", ""),
            header_and.format("C3", "Cy", "Lo", "c3@example.net", "\\|x"),
        ],
    )

    run_batch(tmp_path / "day1", database)
    run_batch(tmp_path / "day2", database)

    # Each customer's second delivery changed one value: each has two versions.
    assert query(
        database,
        "select customer_id, count(*) from business_vault.vw_customer_history"
        " group by customer_id order by customer_id",
    ) == [("C1", 2), ("C2", 2), ("C3", 2)]
    assert query(
        database,
        "select first_name, last_name, phone from business_vault.vw_customer_360"
        " order by customer_id",
    ) == [("Ann", "Lee||X", None), ("Bo", "Li", None), ("Cy", "Lo", "\\|x")]


def test_a_timestamp_postgresql_would_move_or_clients_cannot_read_is_refused(database, tmp_path):
    # PostgreSQL carries a 60th second into the next minute and rounds digits beyond the
    # microsecond; an offset can carry a time in the year 1 or 9999 out of the years 1 to 9999
    # in UTC. The same edges, written exactly, load.
    deliver(
        tmp_path / "day1",
        transactions=[
            order("T1", ts="0001-01-01 00:00:00+14:00"),
            order("T2", ts="9999-12-31 23:59:59-12:00"),
            order("T3", ts="0001-01-01 00:00:00Z"),
            order("T4", ts="9999-12-31 23:59:59+00:00"),
            order("T5", ts="2024-12-31 23:59:60"),
            order("T6", ts="2024-12-31T23:59:59.9999999Z"),
            order("T7", ts="2024-12-31 10:00:00.123456+02:00"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    assert reasons(database, "transactions") == dict.fromkeys((2, 3, 6, 7), "invalid_date")
    assert query(
        database,
        "select order_id, (transaction_ts at time zone 'UTC')::text"
        " from business_vault.vw_order_analytics order by order_id",
    ) == [
        ("T3", "0001-01-01 00:00:00"),
        ("T4", "9999-12-31 23:59:59"),
        ("T7", "2024-12-31 08:00:00.123456"),
    ]


def test_a_configured_format_may_hold_quotes_and_percent_signs(database, tmp_path):
    config = tmp_path / "sources.yaml"
    config.write_text(
        'sources:\n  customers:\n    formats:\n      signup_date: "YYYY-MM-DD \'%"\n',
        encoding="utf-8",
    )
    settings = database.model_copy(update={"sources_config": config})
    deliver(
        tmp_path / "day1",
        customers=[customer("C1", signup="2023-05-17 '%"), customer("C2", signup="2023-05-17")],
    )

    run_batch(tmp_path / "day1", settings)

    assert quarantined(settings, "customers") == {
        3: ("invalid_date", "signup_date '2023-05-17' is not a valid date (YYYY-MM-DD '%)")
    }
    assert query(
        settings, "select customer_id, signup_date::text from business_vault.vw_customer_360"
    ) == [("C1", "2023-05-17")]


def test_a_time_zone_postgresql_does_not_know_is_refused_before_the_batch(database, tmp_path):
    config = tmp_path / "sources.yaml"
    # Python's zoneinfo takes 'localtime' (the machine's zone file); PostgreSQL does not.
    config.write_text("sources:\n  transactions:\n    timezone: localtime\n", encoding="utf-8")
    settings = database.model_copy(update={"sources_config": config})
    deliver(tmp_path / "day1")

    with pytest.raises(UserFacingError) as refused:
        run_batch(tmp_path / "day1", settings)

    assert str(refused.value) == (
        "source configuration: 'sources.transactions.timezone' 'localtime' is not a time zone"
        " PostgreSQL knows; use an IANA name such as UTC or Europe/Berlin"
    )
    assert query(settings, "select count(*) from audit.load_batch") == [(0,)]


def local_time_exists(wall: datetime, zone: ZoneInfo) -> bool:
    """Python's own answer: a wall-clock time exists in a zone when it survives the round trip
    through UTC unchanged."""
    back = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == wall


@pytest.mark.parametrize("transaction_ts", ["iso", "YYYY-MM-DD HH24:MI:SS"])
def test_a_local_time_the_sources_zone_skips_is_refused(database, tmp_path, transaction_ts):
    """Clocks in Berlin went from 02:00 to 03:00 on 2025-03-30: no local time between exists,
    whether the timestamps are read as ISO or by a configured format. The same wall time with
    an offset names an instant and loads."""
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n  transactions:\n    timezone: Europe/Berlin\n"
        f"    formats:\n      transaction_ts: {transaction_ts}\n",
        encoding="utf-8",
    )
    settings = database.model_copy(update={"sources_config": config})
    berlin = ZoneInfo("Europe/Berlin")
    local = {
        "T1": "2025-03-30 02:30:00",
        "T2": "2025-03-30 03:30:00",
        "T3": "2025-03-30 01:59:59",
        "T4": "2025-07-01 12:00:00",
    }
    deliver(
        tmp_path / "day1",
        transactions=[*(order(key, ts=ts) for key, ts in local.items()), order("T5", ts="")],
    )

    run_batch(tmp_path / "day1", settings)

    walls = {key: datetime.fromisoformat(ts) for key, ts in local.items()}
    skipped = {key for key, wall in walls.items() if not local_time_exists(wall, berlin)}
    assert skipped == {"T1"}
    detail = (
        "transaction_ts '2025-03-30 02:30:00' is a local time that Europe/Berlin skips"
        " (clocks moved forward)"
        if transaction_ts == "iso"
        else f"transaction_ts '2025-03-30 02:30:00' is not a valid timestamp ({transaction_ts})"
    )
    assert quarantined(settings, "transactions") == {
        2: ("invalid_date", detail),
        6: ("invalid_date", f"transaction_ts nothing is not a valid timestamp ({transaction_ts})"),
    }
    assert query(
        settings,
        "select order_id, transaction_ts from business_vault.vw_order_analytics order by 1",
    ) == [(key, wall.replace(tzinfo=berlin)) for key, wall in walls.items() if key not in skipped]


def test_an_iso_timestamp_with_an_offset_in_a_zone_with_gaps_names_its_instant(database, tmp_path):
    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  transactions:\n    timezone: Europe/Berlin\n", encoding="utf-8")
    settings = database.model_copy(update={"sources_config": config})
    stamps = {
        "T1": "2025-03-30 02:30:00+00:00",
        "T2": "2025-03-30T02:30:00Z",
        "T3": "2025-03-30 02:30:00-05:00",
    }
    deliver(tmp_path / "day1", transactions=[order(key, ts=ts) for key, ts in stamps.items()])

    run_batch(tmp_path / "day1", settings)

    assert quarantined(settings, "transactions") == {}
    assert query(
        settings,
        "select order_id, transaction_ts from business_vault.vw_order_analytics order by 1",
    ) == [(key, datetime.fromisoformat(ts)) for key, ts in stamps.items()]


def test_numbers_are_plain_decimals(database, tmp_path):
    deliver(
        tmp_path / "day1",
        products=[
            product("P1"),
            "P2,Thing,Tools,Acme,0b1010,4.00",
            "P3,Thing,Tools,Acme,10.00,0o17",
            "P4,Thing,Tools,Acme,1_0.50,4.00",
            "P5,Thing,Tools,Acme,+10.5,.5",
        ],
        transactions=[order("T1"), "T2,C1,P1,0x10,10.00,,10.00,2025-03-01 10:00:00,paypal,shipped"],
    )

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "products") == {
        3: ("invalid_number", "unit_price '0b1010' is not a number"),
        4: ("invalid_number", "cost '0o17' is not a number"),
        5: ("invalid_number", "unit_price '1_0.50' is not a number"),
    }
    assert quarantined(database, "transactions") == {
        3: ("invalid_number", "quantity '0x10' is not a number")
    }
    assert query(
        database,
        "select product_id, unit_price::text, cost::text from business_vault.vw_product_analytics"
        " order by product_id",
    ) == [("P1", "10.00", "4.00"), ("P5", "10.50", "0.50")]


def test_a_number_its_column_cannot_hold_is_refused_as_out_of_range(database, tmp_path):
    line = "{},C1,P1,{},{},{},{},2025-03-01 10:00:00,paypal,shipped"
    deliver(
        tmp_path / "day1",
        transactions=[
            line.format("T1", "2147483647", "9999999999.99", "0.9999", "999999999999.99"),
            line.format("T2", "2147483648", "10.00", "", "10.00"),
            line.format("T3", "1", "10000000000", "", "1e12"),
            line.format("T4", "abc", "99999999999.00", "10", "10.00"),
            line.format("T5", "1.5", "9999999999.999", "", "10.00"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    integer_range = "an integer lies between -2147483648 and 2147483647"
    price_range = (
        "numeric(12, 2) holds at most 10 digits before the point, once rounded to 2 decimal places"
    )
    assert quarantined(database, "transactions") == {
        3: ("invalid_number", f"quantity '2147483648' is out of range: {integer_range}"),
        4: (
            "invalid_number",
            f"unit_price '10000000000' is out of range: {price_range},"
            " total_amount '1e12' is out of range: numeric(14, 2) holds at most 12 digits"
            " before the point, once rounded to 2 decimal places",
        ),
        5: (
            "invalid_number",
            f"quantity 'abc' is not a number, unit_price '99999999999.00' is out of range:"
            f" {price_range}, discount '10' is out of range: numeric(5, 4) holds at most 1 digit"
            " before the point, once rounded to 4 decimal places",
        ),
        6: (
            "invalid_number",
            "quantity '1.5' is not written as a whole number,"
            f" unit_price '9999999999.999' is out of range: {price_range}",
        ),
    }
    assert query(
        database,
        "select order_id, quantity, unit_price::text, total_amount::text"
        " from business_vault.vw_order_analytics",
    ) == [("T1", 2147483647, "9999999999.99", "999999999999.99")]


def test_values_are_trimmed_of_tabs_and_line_breaks_as_keys_are(database, tmp_path):
    deliver(
        tmp_path / "day1",
        customers=[customer("C1", city="Leeds\t"), "C2,\t,Lee,c2@example.net,,,,,,"],
        transactions=[order("T1", status="completed\t")],
    )

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "customers") == {3: ("missing_value", "no value for first_name")}
    assert query(database, "select customer_id, city from business_vault.vw_customer_360") == [
        ("C1", "Leeds")
    ]
    assert query(
        database, "select order_id, order_status from business_vault.vw_order_analytics"
    ) == [("T1", "completed")]


def test_a_key_is_measured_as_delivered_not_upper_cased(database, tmp_path):
    # 'ﬃ' upper-cases to 'FFI': 60 of them are 60 characters as delivered, 180 stored.
    key = "ﬃ" * 60
    deliver(tmp_path / "day1", customers=[customer(key, email="c@example.net")])

    run_batch(tmp_path / "day1", database)

    assert quarantined(database, "customers") == {}
    assert query(database, "select customer_id from business_vault.vw_customer_360") == [
        ("FFI" * 60,)
    ]


def test_a_file_with_a_column_twice_is_refused(database, tmp_path):
    folder = deliver(tmp_path / "day1")
    customers = folder / "customers.csv"
    header, row = customers.read_text(encoding="utf-8").splitlines()
    customers.write_text(f"{header},email\n{row},other@example.net\n", encoding="utf-8")

    with pytest.raises(UserFacingError) as refused:
        run_batch(folder, database)

    assert str(refused.value) == "customers.csv has the column 'email' 2 times (columns 4, 11)"
    assert query(database, "select count(*) from audit.load_batch") == [(0,)]


def test_an_order_whose_customer_or_product_was_refused_says_so(database, tmp_path):
    deliver(
        tmp_path / "day1",
        customers=[customer("C1"), customer("C5", signup="2024-13-01")],
        products=[product("P1"), product("P2", category="")],
        transactions=[
            order("T1"),
            order("T2", customer_id="C5"),
            order("T3", product_id="P2"),
            order("T4", customer_id="C9"),
        ],
    )

    run_batch(tmp_path / "day1", database)

    ghost = "; linked to the ghost record"
    assert quarantined(database, "transactions") == {
        3: (
            "unknown_customer",
            "customer 'C5' is not in the customer hub (its row in this delivery was"
            f" quarantined: invalid_date){ghost}",
        ),
        4: (
            "unknown_product",
            "product 'P2' is not in the product hub (its row in this delivery was"
            f" quarantined: missing_value){ghost}",
        ),
        5: ("unknown_customer", f"customer 'C9' is not in the customer hub{ghost}"),
    }


@pytest.mark.parametrize("late", ["customer", "product"])
def test_an_order_linked_to_a_ghost_is_linked_to_its_customer_or_product_when_it_arrives(
    database, tmp_path, late
):
    """T2 names a customer (or product) nobody delivered yet: it loads against the ghost
    record. When a later batch brings that customer, T2, not delivered again, is theirs."""
    named = {"customer": {"customer_id": "C9"}, "product": {"product_id": "P9"}}[late]
    day1 = deliver(
        tmp_path / "day1", transactions=[order("T1"), order("T2", total="25.00", **named)]
    )
    run_batch(day1, database)
    current = (
        "select order_id, customer_id, product_id from business_vault.vw_order_analytics"
        " order by order_id"
    )
    assert query(database, current) == [
        ("T1", "C1", "P1"),
        ("T2", None if late == "customer" else "C1", None if late == "product" else "P1"),
    ]

    arrival = customer("C9") if late == "customer" else product("P9")
    day2 = deliver(tmp_path / "day2", **{f"{late}s": [arrival]}, transactions=[order("T3")])
    report = run_batch(day2, database)

    t2 = ("T2", named.get("customer_id", "C1"), named.get("product_id", "P1"))
    assert query(database, current) == [("T1", "C1", "P1"), t2, ("T3", "C1", "P1")]
    # T3's link and T2's new one; the relationship dates from the load that made it known.
    link = f"link_{'customer_order' if late == 'customer' else 'order_product'}"
    assert report["row_counts"]["inserted"][link] == 2
    assert query(
        database,
        f"select link.record_source, link.load_dts = batch.load_dts from raw_vault.{link} as link"
        f" join raw_vault.hub_{late} as hub using ({late}_hk), audit.load_batch as batch"
        f" where hub.{late}_id = %s and batch.batch_id = %s",
        (next(iter(named.values())), report["batch_id"]),
    ) == [("pos.transactions", True)]
    if late == "customer":
        assert query(
            database,
            "select order_count, lifetime_value from business_vault.vw_customer_360"
            " where customer_id = 'C9'",
        ) == [(1, Decimal("25.00"))]
    else:
        assert query(
            database,
            "select units_sold, revenue from business_vault.vw_product_analytics"
            " where product_id = 'P9'",
        ) == [(1, Decimal("25.00"))]

    # Later batches, and the links step of this one run again, add nothing for T2.
    load_links(report["batch_id"], database)
    run_batch(deliver(tmp_path / "day3", transactions=[order("T4")]), database)
    assert query(
        database,
        f"select count(*) from raw_vault.{link} as link join raw_vault.hub_order using (order_hk)"
        " where hub_order.order_id = 'T2'",
    ) == [(2,)]


def test_a_ghost_linked_order_delivered_since_with_a_known_customer_keeps_it(database, tmp_path):
    """Only an order still linked to the ghost is linked when its customer arrives: one
    delivered since with another customer keeps that one, as does one the arriving batch
    delivers with another."""
    run_batch(
        deliver(
            tmp_path / "day1",
            transactions=[order("T1", customer_id="C9"), order("T2", customer_id="C9")],
        ),
        database,
    )
    run_batch(
        deliver(tmp_path / "day2", transactions=[order("T1"), order("T3", customer_id="C8")]),
        database,
    )

    run_batch(
        deliver(
            tmp_path / "day3",
            customers=[customer("C1"), customer("C8"), customer("C9")],
            transactions=[order("T2", customer_id="C8")],
        ),
        database,
    )

    assert query(
        database,
        "select order_id, customer_id from business_vault.vw_order_analytics order by order_id",
    ) == [("T1", "C1"), ("T2", "C8"), ("T3", "C8")]


def test_a_late_customer_is_linked_only_to_what_loaded_batches_named(database, tmp_path):
    """A batch that failed before the vault named C8 for T2; its quarantine rows stay, but
    C8's arrival does not move T2, which C9, named by the batch that loaded, then takes."""
    run_batch(
        deliver(tmp_path / "day1", transactions=[order("T1"), order("T2", customer_id="C9")]),
        database,
    )
    strict = database.model_copy(update={"min_products": 2})
    with pytest.raises(ThresholdBreachedError):
        run_batch(deliver(tmp_path / "day2", transactions=[order("T2", customer_id="C8")]), strict)
    current = "select customer_id from business_vault.vw_order_analytics where order_id = 'T2'"

    run_batch(
        deliver(tmp_path / "day3", customers=[customer("C8")], transactions=[order("T3")]),
        database,
    )
    assert query(database, current) == [(None,)]

    run_batch(
        deliver(tmp_path / "day4", customers=[customer("C9")], transactions=[order("T4")]),
        database,
    )
    assert query(database, current) == [("C9",)]
