"""Landing a hand-written file: what COPY receives, line by line, for the awkward cases of CSV.

The expected rows below are read off the file's text by hand, not computed by the loader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from customer360.errors import UserFacingError
from customer360.landing import LandingResult, check_header, land_file
from customer360.settings import Settings
from customer360.sources import load_source_specs

HEADER = b"product_id,product_name,category,brand,unit_price,cost\r\n"

AWKWARD_LINES = [
    b"P1,Plain,Tools,Acme,1.00,0.50\r\n",  # line 2
    b"\r\n",  # line 3: blank, not a record
    b'P2,"Comma, and ""quote""",Tools,Acme,2.00,1.00\r\n',  # line 4
    b'P3,"Two\r\nlines",Tools,Acme,3.00,1.50\r\n',  # lines 5-6: one record
    b"P4,Short,Tools,Acme,4.00\r\n",  # line 7: five fields
    b"P5,Caf\xe9,Tools,Acme,5.00,2.50\r\n",  # line 8: Latin-1, not UTF-8
    b"P6,Nul\x00l,Tools,Acme,6.00,3.00\r\n",  # line 9: a NUL byte
    b"P7, Spaced ,Tools,,7.00,3.50\r\n",  # line 10: spaces kept, empty brand is null
    b'P8,"never closed,Tools,Acme,8.00,4.00\r\n',  # line 11: the quote is open at the end
]


@pytest.fixture
def cursor(database: Settings) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in a transaction that is rolled back, with a batch to land into."""
    conn = psycopg2.connect(database.dsn)
    with conn.cursor() as cur:
        cur.execute(
            "insert into audit.load_batch (load_dts, data_dir) values (now(), 'test')"
            " returning batch_id"
        )
        yield cur
    conn.rollback()
    conn.close()


def _batch_id(cursor) -> int:
    cursor.execute("select max(batch_id) from audit.load_batch")
    return cursor.fetchone()[0]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_awkward_records_land_or_are_quarantined_with_their_line(
    cursor, database, tmp_path, line_end
):
    # Plain lines between the awkward ones, as in a real file, with both kinds of line end.
    content = (HEADER + b"".join(AWKWARD_LINES)).replace(b"\r\n", line_end)
    newline = line_end.decode()
    path = tmp_path / "products.csv"
    path.write_bytes(content)
    batch_id = _batch_id(cursor)

    result = land_file(cursor, load_source_specs(database)["products"], path, batch_id)

    cursor.execute(
        "select line_number, product_id, product_name, brand, cost from staging.raw_products"
        " where batch_id = %s order by line_number",
        (batch_id,),
    )
    assert cursor.fetchall() == [
        (2, "P1", "Plain", "Acme", "0.50"),
        (4, "P2", 'Comma, and "quote"', "Acme", "1.00"),
        (6, "P3", f"Two{newline}lines", "Acme", "1.50"),
        (10, "P7", " Spaced ", None, "3.50"),
    ]
    cursor.execute(
        "select line_number, reason, raw_row from audit.quarantine"
        " where batch_id = %s order by line_number",
        (batch_id,),
    )
    assert cursor.fetchall() == [
        (7, "malformed_row", {"fields": ["P4", "Short", "Tools", "Acme", "4.00"]}),
        (8, "invalid_encoding", {"fields": ["P5", "Caf\ufffd", "Tools", "Acme", "5.00", "2.50"]}),
        (9, "invalid_encoding", {"fields": ["P6", "Nul\\0l", "Tools", "Acme", "6.00", "3.00"]}),
        (11, "malformed_row", {"fields": ["P8", '"never closed', "Tools", "Acme", "8.00", "4.00"]}),
    ]
    assert (result.data_rows, result.landed) == (8, 4)
    assert (result.sha256, result.bytes) == (hashlib.sha256(content).hexdigest(), len(content))


def test_a_file_in_another_column_order_lands_in_the_canonical_columns(
    cursor, database, tmp_path: Path
):
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n  products:\n    file: products.csv\n    record_source: shop.products\n"
        "    columns: {product_id: sku}\n"
    )
    path = tmp_path / "products.csv"
    path.write_bytes(
        b"cost,sku,product_name,category,brand,unit_price\n"
        b"0.50,P1,Plain,Tools,Acme,1.00\n"
        b'1.00,P2,"Comma, here",Tools,Acme,2.00\n'
        b"1.50,P3,Short,Tools,Acme\n"
    )
    settings = database.model_copy(update={"sources_config": config})
    batch_id = _batch_id(cursor)

    result = land_file(cursor, load_source_specs(settings)["products"], path, batch_id)

    cursor.execute(
        "select line_number, product_id, product_name, unit_price, cost from staging.raw_products"
        " where batch_id = %s order by line_number",
        (batch_id,),
    )
    assert cursor.fetchall() == [
        (2, "P1", "Plain", "1.00", "0.50"),
        (3, "P2", "Comma, here", "2.00", "1.00"),
    ]
    assert [(r["line"], r["reason"]) for r in result.rejected] == [(4, "malformed_row")]


def _land_products(cursor, database, tmp_path, content: bytes) -> tuple[LandingResult, list, list]:
    """Land ``content`` as products.csv: the result, the landed (line, product_id) rows and the
    quarantined (line, reason, raw_row) rows."""
    path = tmp_path / "products.csv"
    path.write_bytes(content)
    batch_id = _batch_id(cursor)
    result = land_file(cursor, load_source_specs(database)["products"], path, batch_id)
    cursor.execute(
        "select line_number, product_id from staging.raw_products"
        " where batch_id = %s order by line_number",
        (batch_id,),
    )
    landed = cursor.fetchall()
    cursor.execute(
        "select line_number, reason, raw_row from audit.quarantine"
        " where batch_id = %s order by line_number",
        (batch_id,),
    )
    return result, landed, cursor.fetchall()


def test_a_quote_left_open_costs_only_its_own_line(cursor, database, tmp_path):
    content = (
        HEADER
        + b"P1,Plain,Tools,Acme,1.00,0.50\r\n"  # line 2
        + b'P2,"Left open,Tools,Acme,2.00,1.00\r\n'  # line 3: the quote is never closed...
        + b"P3,Plain,Tools,Acme,3.00,1.50\r\n"  # line 4
        + b'P4,"Quoted, properly",Tools,Acme,4.00,2.00\r\n'  # line 5: ...until this line
        + b"P5,Plain,Tools,Acme,5.00,2.50\r\n"  # line 6
    )

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    assert landed == [(2, "P1"), (4, "P3"), (5, "P4"), (6, "P5")]
    assert [(line, reason) for line, reason, _ in quarantined] == [(3, "malformed_row")]
    assert quarantined[0][2] == {"fields": ["P2", '"Left open', "Tools", "Acme", "2.00", "1.00"]}
    assert (result.data_rows, result.landed) == (5, 4)


def test_two_quotes_left_open_cost_only_their_own_lines(cursor, database, tmp_path):
    # Read from line 2 on, the csv module alone would take lines 2-5 for one record of the
    # right width, closing the quote at line 5.
    content = (
        HEADER
        + b'P2,"Left open,Tools,Acme,2.00,1.00\n'  # line 2
        + b"P3,Plain,Tools,Acme,3.00,1.50\n"  # line 3
        + b"P4,Plain,Tools,Acme,4.00,2.00\n"  # line 4
        + b'P5,"Also open,Tools,Acme,5.00,2.50\n'  # line 5
        + b"P6,Plain,Tools,Acme,6.00,3.00\n"  # line 6
    )

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    assert landed == [(3, "P3"), (4, "P4"), (6, "P6")]
    assert [(line, reason) for line, reason, _ in quarantined] == [
        (2, "malformed_row"),
        (5, "malformed_row"),
    ]
    assert (result.data_rows, result.landed) == (5, 3)


def test_a_closed_quoted_field_over_two_lines_is_one_record_even_when_refused(
    cursor, database, tmp_path
):
    content = (
        HEADER
        + b'P2,"Two\nlines",Tools,Acme,2.00\n'  # lines 2-3: one record, five fields
        + b"P4,Plain,Tools,Acme,4.00,2.00\n"  # line 4
    )

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    assert landed == [(4, "P4")]
    assert quarantined == [
        (3, "malformed_row", {"fields": ["P2", "Two\nlines", "Tools", "Acme", "2.00"]})
    ]
    assert (result.data_rows, result.landed) == (2, 1)


def test_a_quote_left_open_before_many_lines_does_not_swallow_them(cursor, database, tmp_path):
    # No quote follows the open one: the csv module alone would read to the end of the file.
    plain = [f"P{n},Plain,Tools,Acme,{n}.00,1.00\n".encode() for n in range(3, 253)]
    content = HEADER + b'P2,"Left open,Tools,Acme,2.00,1.00\n' + b"".join(plain)

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    assert landed == [(n, f"P{n}") for n in range(3, 253)]
    assert [(line, reason) for line, reason, _ in quarantined] == [(2, "malformed_row")]
    assert (result.data_rows, result.landed) == (251, 250)


def test_a_chunk_of_only_quarantined_records_does_not_end_the_copy(
    cursor, database, tmp_path, monkeypatch
):
    monkeypatch.setattr("customer360.landing.COPY_CHUNK_RECORDS", 2)
    content = (
        HEADER
        + b"P1,Caf\xe9,Tools,Acme,1.00,0.50\r\n"  # lines 2-3: Latin-1, a whole chunk
        + b"P2,Cr\xe8me,Tools,Acme,2.00,1.00\r\n"
        + b"P3,Plain,Tools,Acme,3.00,1.50\r\n"  # lines 4-6: valid
        + b"P4,Plain,Tools,Acme,4.00,2.00\r\n"
        + b"P5,Plain,Tools,Acme,5.00,2.50\r\n"
    )

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    assert landed == [(4, "P3"), (5, "P4"), (6, "P5")]
    assert [(line, reason) for line, reason, _ in quarantined] == [
        (2, "invalid_encoding"),
        (3, "invalid_encoding"),
    ]
    assert (result.data_rows, result.landed) == (5, 3)


def test_a_byte_order_mark_is_not_part_of_the_header(cursor, database, tmp_path):
    content = b"\xef\xbb\xbf" + HEADER + b"P1,Plain,Tools,Acme,1.00,0.50\r\n"

    result, landed, quarantined = _land_products(cursor, database, tmp_path, content)

    check_header(load_source_specs(database)["products"], tmp_path / "products.csv")
    assert (landed, quarantined) == ([(2, "P1")], [])
    assert (result.sha256, result.bytes) == (hashlib.sha256(content).hexdigest(), len(content))


def test_an_empty_line_before_the_header_is_named_as_the_problem(cursor, database, tmp_path):
    content = b"\r\n" + HEADER + b"P1,Plain,Tools,Acme,1.00,0.50\r\n"
    (tmp_path / "products.csv").write_bytes(content)
    spec = load_source_specs(database)["products"]

    for read_header in (check_header, lambda spec, path: land_file(cursor, spec, path, 1)):
        with pytest.raises(UserFacingError) as refused:
            read_header(spec, tmp_path / "products.csv")
        assert str(refused.value) == "products.csv starts with an empty line: expected a header row"
