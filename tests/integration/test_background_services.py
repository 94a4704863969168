"""Background services and their pid files, against real processes: a pid file left behind (by
a reboot, say) may name a process that is not the service, which must then be left alone."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from customer360 import airflow_local
from customer360.kafka_broker import KafkaBroker
from customer360.services import BackgroundService, c360_service
from customer360.settings import Settings

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


def running(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie does not), read from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def unrelated_process() -> Iterator[subprocess.Popen]:
    """A process the service knows nothing about, leading its own group as a daemon would."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_pid_file_naming_an_unrelated_process_is_stale(tmp_path, unrelated_process):
    service = BackgroundService("api", SLEEPER, Settings(work_dir=tmp_path))
    service.run_dir.mkdir(parents=True)
    service.pid_file.write_text(f"{unrelated_process.pid}\n")

    assert service.pid() is None
    assert not service.pid_file.exists()

    service.pid_file.write_text(f"{unrelated_process.pid}\n")
    assert service.stop(timeout=2) is False
    time.sleep(0.5)  # a signal, had one been sent, has arrived by now
    assert unrelated_process.poll() is None


def test_a_started_service_is_found_and_stopped_with_its_group(tmp_path):
    service = BackgroundService("sleeper", SLEEPER, Settings(work_dir=tmp_path))
    pid = service.start()
    try:
        assert service.pid_file.read_text() == str(pid)
        assert service.pid() == pid
        assert service.start() == pid  # not started a second time
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == ("\0".join(SLEEPER) + "\0").encode()

        assert service.stop(timeout=10) is True
        assert not running(pid)
        assert not service.pid_file.exists()
        assert service.pid() is None
    finally:
        if running(pid):
            os.killpg(pid, signal.SIGKILL)


def test_a_pid_file_naming_another_users_process_is_stale(unrelated_process):
    """Signalling another user's process is refused (PermissionError); it is not the service."""
    if os.geteuid() == 0:
        # Root may signal every process, so the check runs as an unprivileged user.
        target, run = unrelated_process.pid, as_nobody
    else:
        target, run = 1, lambda check: repr(check())  # init: always there, always root's
    work_dir = Path(tempfile.mkdtemp(prefix="c360-other-user-"))
    try:
        service = c360_service("api", "api", "serve", settings=Settings(work_dir=work_dir))
        service.run_dir.mkdir()
        service.pid_file.write_text(str(target))
        for path in (work_dir, service.run_dir, service.pid_file):
            shutil.chown(path, "nobody") if os.geteuid() == 0 else None

        outcome = run(lambda: (service.pid(), service.stop(timeout=2), service.pid_file.exists()))

        assert outcome == repr((None, False, False))
        assert running(target)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def as_nobody(check: Callable[[], object]) -> str:
    """repr() of what ``check`` returns (or raises) in a forked child running as ``nobody``."""
    user = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which always leaves via _exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                outcome = repr(check())
            except BaseException as exc:
                outcome = f"raised {exc!r}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        outcome = reader.read()
    os.waitpid(child, 0)
    return outcome


def test_kafka_and_airflow_pid_files_naming_an_unrelated_process_are_ignored(
    tmp_path, unrelated_process
):
    broker = KafkaBroker(home=tmp_path / "kafka")
    broker.home.mkdir()
    broker.pid_file.write_text(str(unrelated_process.pid))
    assert broker.pid() is None
    assert broker.stop(timeout=2) is False

    home = airflow_local.airflow_home(Settings(work_dir=tmp_path))
    home.mkdir()
    (home / "standalone.pid").write_text(str(unrelated_process.pid))
    assert airflow_local.status(Settings(work_dir=tmp_path)).pid is None
    assert airflow_local.stop(Settings(work_dir=tmp_path), timeout=2) is False

    time.sleep(0.5)  # a signal, had one been sent, has arrived by now
    assert unrelated_process.poll() is None
