"""Health check of the stream-consumer container: exit 0 when the consumer is doing its job.

A running process is not enough: a consumer that has not joined its group reads nothing. The
container is healthy when a member of the consumer group connects from this container's own
addresses (so each replica answers for itself) and PostgreSQL, where it writes, answers.
"""

from __future__ import annotations

import socket
import sys

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from customer360.db import DatabaseUnavailableError, connect
from customer360.settings import get_settings


def own_addresses() -> set[str]:
    """The IP addresses this container's consumer connects to the broker from."""
    addresses = {"127.0.0.1", "::1"}
    try:
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(sockaddr[0]))
    except OSError:
        pass
    return addresses


def member_here(group: dict, addresses: set[str]) -> bool:
    """Whether a group description (``KafkaAdminClient.describe_groups``) lists a local member."""
    if group.get("error") or group.get("group_state") in (None, "Dead", "Empty"):
        return False
    # The broker reports each member's client host as "/<ip>".
    hosts = {str(member.get("client_host", "")).lstrip("/") for member in group.get("members", [])}
    return bool(hosts & addresses)


def main() -> int:
    """Check the group membership, then the database; print why when unhealthy."""
    settings = get_settings()
    group_id = settings.kafka_consumer_group
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            client_id="c360-healthcheck",
            request_timeout_ms=5000,
        )
        try:
            group = admin.describe_groups([group_id])[group_id]
        finally:
            admin.close()
    except KafkaError as exc:
        print(f"unhealthy: cannot describe consumer group {group_id}: {exc}")
        return 1
    if not member_here(group, own_addresses()):
        print(f"unhealthy: no member of {group_id} runs here (state {group.get('group_state')})")
        return 1
    try:
        connect(settings).close()
    except DatabaseUnavailableError as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
