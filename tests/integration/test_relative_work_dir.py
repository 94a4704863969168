"""A relative C360_WORK_DIR: the embedded PostgreSQL and the Kafka broker run in directories of
their own, and must still find the data, configuration and log files under the work dir."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg2
import pytest

from customer360.embedded_db import server_for_settings
from customer360.kafka_broker import broker_for_settings
from customer360.processes import free_port
from customer360.settings import Settings


@pytest.fixture
def relative_work_dir(tmp_path, monkeypatch) -> Path:
    """C360_WORK_DIR=.c360, read in a fresh directory; returns where it must end up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("C360_WORK_DIR", ".c360")
    monkeypatch.delenv("C360_DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    return tmp_path.resolve() / ".c360"


def test_embedded_postgres_starts_from_a_relative_work_dir(relative_work_dir, monkeypatch):
    monkeypatch.setenv("C360_EMBEDDED_PG_PORT", str(free_port()))
    server = server_for_settings(Settings())
    try:
        server.start()
        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
        conn.close()
        assert (relative_work_dir / "postgres" / "pgdata" / "PG_VERSION").is_file()
    finally:
        server.stop()


@pytest.mark.kafka
def test_kafka_broker_starts_from_a_relative_work_dir(relative_work_dir, monkeypatch):
    monkeypatch.setenv("C360_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port(count=2)}")
    broker = dataclasses.replace(broker_for_settings(Settings()), heap="512m")
    try:
        broker.start(timeout=90)
        assert broker.is_ready()
        assert broker.pid() is not None
        assert (relative_work_dir / "kafka" / "data" / "meta.properties").is_file()
    finally:
        broker.stop()
