"""Connection reuse within a load: the steps' transactions share a few connections, an error
does not leak into the next transaction, and nothing stays open afterwards."""

from __future__ import annotations

import psycopg2
import pytest

from customer360.db import reused_connections, transaction


def _backend_pid(settings) -> int:
    with transaction(settings) as cur:
        cur.execute("select pg_backend_pid()")
        return cur.fetchone()[0]


def _is_connected(settings, pid: int) -> bool:
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*) from pg_stat_activity where pid = %s", (pid,))
        found = cur.fetchone()[0] == 1
    conn.close()
    return found


def test_transactions_reuse_connections_only_inside_the_block(database):
    assert _backend_pid(database) != _backend_pid(database)
    with reused_connections(database):
        first = _backend_pid(database)
        assert _backend_pid(database) == first
        assert _is_connected(database, first)
    assert not _is_connected(database, first)


def test_a_failed_transaction_leaves_a_clean_connection(database):
    with reused_connections(database):
        pid = _backend_pid(database)
        with pytest.raises(psycopg2.errors.DivisionByZero), transaction(database) as cur:
            cur.execute("create temporary table leftover (x int)")
            cur.execute("select 1 / 0")
        with transaction(database) as cur:
            cur.execute("select pg_backend_pid(), to_regclass('pg_temp.leftover')")
            assert cur.fetchone() == (pid, None)
