"""Background services the demo leaves running (the API server, the stream consumer):
started detached, with a pid file and a log under ``<work_dir>/run``, and stopped by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from customer360.processes import command_line, group_alive, signal_group
from customer360.settings import Settings, get_settings


@dataclass(frozen=True)
class BackgroundService:
    """A long-running ``c360`` subcommand, detached from the terminal that started it."""

    name: str
    argv: tuple[str, ...]
    settings: Settings

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.work_dir) / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running service, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not self._runs_as(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _runs_as(self, pid: int) -> bool:
        """Whether ``pid`` is this service: a process we may signal that runs its command."""
        # After a reboot the number may name an unrelated process, even another user's.
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        arguments = command_line(pid)
        if arguments is None:
            # No /proc to read (not Linux): the live pid is all there is to go by.
            return not Path("/proc").is_dir()
        # The interpreter is left out, as the same venv may be reached through another path;
        # a zombie's command line is empty and does not match.
        return arguments[1:] == list(self.argv[1:])

    def start(self) -> int:
        """Start the service unless it already runs; returns its pid."""
        running = self.pid()
        if running:
            return running
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the terminal; stopped as a process group
            )
        # The new process's command line can read empty for a moment after Popen returns;
        # pid() must recognise the service as soon as start() returns.
        deadline = time.monotonic() + 5
        while command_line(process.pid) == [] and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the service's process group (SIGTERM, then SIGKILL); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_alive(pid):
            time.sleep(0.2)
        if group_alive(pid):
            signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def c360_service(name: str, *args: str, settings: Settings | None = None) -> BackgroundService:
    """A background service running ``c360 <args>`` with this virtual environment's Python."""
    import sys

    return BackgroundService(
        name, (sys.executable, "-m", "customer360.cli", *args), settings or get_settings()
    )
