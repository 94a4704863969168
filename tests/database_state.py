"""Reading what a database holds: plain queries, and snapshots for tests that prove a step
changed nothing."""

from __future__ import annotations

import psycopg2


def fingerprints(settings, relations) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over the sorted rows of each relation (schema-qualified)."""
    conn = psycopg2.connect(settings.dsn)
    try:
        with conn.cursor() as cur:
            prints = {}
            for relation in relations:
                cur.execute(
                    "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                    f" from {relation} as t"
                )
                prints[relation] = cur.fetchone()
    finally:
        conn.close()
    return prints


def query(settings, sql: str, params=None) -> list[tuple]:
    """The rows of one statement, on a connection of its own."""
    conn = psycopg2.connect(settings.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()
