"""Path settings are absolute once read, so that programs started in another directory (the
database server, the broker, Airflow's tasks) find the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from customer360.airflow_local import airflow_home
from customer360.embedded_db import server_for_settings
from customer360.kafka_broker import broker_for_settings
from customer360.settings import Settings


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ("C360_WORK_DIR", "C360_DATA_DIR", "C360_LANDING_DIR", "C360_SOURCES_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("C360_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def test_relative_paths_from_the_environment_become_absolute(
    tmp_path, monkeypatch, clean_environment
):
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    monkeypatch.setenv("C360_WORK_DIR", ".c360")
    monkeypatch.setenv("C360_DATA_DIR", "./state/../data")
    monkeypatch.setenv("C360_LANDING_DIR", "landing")
    monkeypatch.setenv("C360_SOURCES_CONFIG", "config/sources.yaml")

    settings = Settings()
    monkeypatch.chdir(tmp_path)  # where the paths are used no longer matters

    base = str(start.resolve())
    assert str(settings.work_dir) == base + "/.c360"
    assert str(settings.data_dir) == base + "/data"
    assert str(settings.landing_dir) == base + "/landing"
    assert str(settings.sources_config) == base + "/config/sources.yaml"
    assert str(server_for_settings(settings).pgdata) == base + "/.c360/postgres/pgdata"
    assert str(broker_for_settings(settings).home) == base + "/.c360/kafka"
    assert str(airflow_home(settings)) == base + "/.c360/airflow"


def test_relative_paths_given_directly_become_absolute(tmp_path, monkeypatch, clean_environment):
    monkeypatch.chdir(tmp_path)

    settings = Settings(work_dir=Path("state"), data_dir="data/generated", landing_dir=None)

    assert str(settings.work_dir) == f"{tmp_path.resolve()}/state"
    assert str(settings.data_dir) == f"{tmp_path.resolve()}/data/generated"
    assert settings.landing_dir is None
    assert settings.sources_config is None
