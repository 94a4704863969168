"""Watching and stopping the background processes the platform starts (PostgreSQL aside):
the Kafka broker, Airflow, the API server and the stream consumer; and free ports for the
servers that tests and benchmarks start."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether the process runs; an exited child is reaped, and a zombie does not count."""
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_stat(Path(f"/proc/{pid}/stat"))
    return state is not None and state[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies waiting to be reaped do not count."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat_file in proc.glob("[0-9]*/stat"):
        state = _proc_stat(stat_file)
        if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
            return True
    return False


def command_line(pid: int) -> list[str] | None:
    """The arguments a process was started with, or None when it has gone (or there is no /proc).

    A pid file outlives a reboot, and its number may since belong to any other program: what
    the process runs is the only way to tell whether it is still the one we started.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Each argument ends with a NUL (a process that retitled itself may drop the last one);
    # a zombie's command line is empty.
    text = raw.decode(errors="replace")
    return text.removesuffix("\0").split("\0") if text else []


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Ports this process has handed out but whose servers may not be listening yet.
_ports_handed_out: set[int] = set()
# Seeded by the system, not by the global generator that tests may seed alike in every process.
_port_picker = random.SystemRandom()


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports on 127.0.0.1 that are all free now.

    The ports come from below the kernel's ephemeral range: outgoing connections take their
    local ports from that range, so a port picked there can be taken before the server that
    is meant to listen on it has started.
    """
    lowest, end = 10_000, _ephemeral_range_start()
    if end - lowest < 1_000:  # a kernel whose ephemeral range takes nearly every port
        end = 65_536
    for _ in range(200):
        first = _port_picker.randrange(lowest, end - count)
        if _ports_handed_out.intersection(range(first, first + count)):
            continue
        try:
            with contextlib.ExitStack() as probes:
                for port in range(first, first + count):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        _ports_handed_out.update(range(first, first + count))
        return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a whole process group, if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _proc_stat(stat_file: Path) -> tuple[str, int] | None:
    """(state, process group) from /proc/<pid>/stat, or None when it cannot be read."""
    try:
        # The command name may contain spaces; the fields after its closing parenthesis do not.
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None
