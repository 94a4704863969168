"""The hash key function in SQL against MD5 computed in Python from the normalisation rule."""

from __future__ import annotations

import hashlib
import uuid

import pytest


def python_hash_key(*parts: str | None) -> str | None:
    normalised = [(p or "").strip(" \t\r\n").upper() or None for p in parts]
    if any(p is None for p in normalised):
        return None
    return str(uuid.UUID(hashlib.md5("||".join(normalised).encode("utf-8")).hexdigest()))


@pytest.mark.parametrize(
    "key",
    ["C000001", " c000001 ", "c000001", "\tC000001\n", "Zoë-Ørsted", "", "   ", None],
)
def test_single_part_keys(db_cursor, key):
    db_cursor.execute("select raw_vault.hash_key(%s)::text", (key,))
    assert db_cursor.fetchone()[0] == python_hash_key(key)


def test_case_and_spaces_do_not_change_the_key(db_cursor):
    db_cursor.execute("select raw_vault.hash_key(' c000001 ') = raw_vault.hash_key('C000001')")
    assert db_cursor.fetchone()[0] is True


@pytest.mark.parametrize(
    "parts", [("C000001", "T00000001"), (" c1 ", "t1"), ("C1", ""), (None, "T1"), ("ß", "é")]
)
def test_composite_keys_join_parts_with_double_bar(db_cursor, parts):
    db_cursor.execute("select raw_vault.hash_key(%s, %s)::text", parts)
    assert db_cursor.fetchone()[0] == python_hash_key(*parts)


def test_composite_key_differs_from_the_concatenated_single_key(db_cursor):
    db_cursor.execute("select raw_vault.hash_key('A', 'BC') <> raw_vault.hash_key('AB', 'C')")
    assert db_cursor.fetchone()[0] is True
