"""The real Kafka broker for tests: one KRaft broker per session, on free ports of 127.0.0.1.

Import the fixture into a test module (``from kafka_fixtures import kafka_bootstrap``). When
``KAFKA_BOOTSTRAP_SERVERS`` is set, the tests use that broker instead of starting one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from customer360.kafka_broker import KafkaBroker
from customer360.processes import free_port
from customer360.settings import get_settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a running broker, exported as KAFKA_BOOTSTRAP_SERVERS."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    port = free_port(count=2)
    broker = KafkaBroker(
        home=tmp_path_factory.mktemp("kafka"), port=port, controller_port=port + 1, heap="512m"
    )
    broker.start()
    # Subprocesses (consumers started by tests) and get_settings() read the same variable.
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    get_settings.cache_clear()
    try:
        yield broker.bootstrap_servers
    finally:
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        get_settings.cache_clear()
        broker.stop()
