"""Picking ports for servers the tests and benchmarks start."""

from __future__ import annotations

import socket
from pathlib import Path

from customer360.processes import free_port


def test_free_ports_are_consecutive_free_and_outside_the_ephemeral_range() -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = free_port(count=2)
    assert first + 1 < ephemeral_start
    with socket.socket() as clients, socket.socket() as controller:
        clients.bind(("127.0.0.1", first))
        controller.bind(("127.0.0.1", first + 1))


def test_a_port_is_not_handed_out_twice_before_its_server_listens() -> None:
    handed_out = [free_port(count=2) for _ in range(50)]
    taken = [port for first in handed_out for port in (first, first + 1)]
    assert len(set(taken)) == len(taken)
