"""Watching and stopping the background processes the platform starts (PostgreSQL aside):
the Kafka broker, Airflow, the API server and the stream consumer."""

from __future__ import annotations

import contextlib
import os
import signal
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
