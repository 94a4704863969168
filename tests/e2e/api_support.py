"""Run the API as a real uvicorn server in a subprocess, for the HTTP, schema and browser tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from customer360.processes import free_port
from customer360.settings import PROJECT_ROOT, Settings

TEST_API_KEYS = ("test-key-primary", "test-key-secondary")
TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256!"


@contextmanager
def running_api(settings: Settings, log_dir: Path, name: str, **overrides: str) -> Iterator[str]:
    """Serve the API for ``settings`` (plus C360_* ``overrides``) and yield its base URL.

    The server is ``c360 api serve`` with one worker on 127.0.0.1 and a free port; it is
    stopped on exit.
    """
    port = free_port()
    env = {
        **os.environ,
        "C360_WORK_DIR": str(settings.work_dir),
        "C360_EMBEDDED_PG_PORT": str(settings.embedded_pg_port),
        "C360_API_KEYS": ",".join(TEST_API_KEYS),
        "C360_JWT_SECRET": TEST_JWT_SECRET,
        "C360_API_RATE_LIMIT_PER_MINUTE": "1000000",
        # Schemathesis tries every operation with bad credentials.
        "C360_API_FAILED_AUTH_PER_MINUTE": "1000000",
        "C360_API_CORS_ORIGINS": "http://allowed.example",
        "C360_API_POOL_TIMEOUT": "2",
    }
    if settings.database_url:
        env["C360_DATABASE_URL"] = settings.database_url
    env.update(overrides)
    log_path = log_dir / f"api-{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "customer360.cli", "api", "serve",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(base_url, process, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(base_url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"API did not answer /health within 60 s: {log_path.read_text()}")
