"""A local Apache Kafka broker in KRaft mode (one node as broker and controller), without Docker.

The broker's jars come from Maven Central: ``streaming/broker/pom.xml`` names the pinned
``org.apache.kafka:kafka_2.13`` release and a log4j2 backend, and Maven copies them with their
runtime dependencies into ``~/.cache/customer360/kafka/<version>/libs`` (shared by every work
dir; Maven keeps its own cache in ``~/.m2``). Runtime state — configuration, the log
directory, the broker's own log and the pid file — lives under ``<work_dir>/kafka``.
The broker listens on 127.0.0.1 only: the client port from the settings, the controller on
the next port.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from customer360.errors import UserFacingError
from customer360.processes import command_line, port_in_use, process_alive
from customer360.settings import PROJECT_ROOT, Settings, get_settings

POM_FILE = PROJECT_ROOT / "streaming" / "broker" / "pom.xml"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 60

# A development broker: one replica of everything, no waiting for a group to fill up.
BROKER_DEFAULTS = {
    "num.partitions": "6",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "min.insync.replicas": "1",
    "default.replication.factor": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "log.retention.hours": "168",
    "log.segment.bytes": str(256 * 1024 * 1024),
}

LOG4J2_CONFIG = """\
# Kafka's own log: the broker, the controller and the request log at WARN.
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = {log_dir}/server.log
appender.server.filePattern = {log_dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaBrokerError(UserFacingError):
    """The local broker could not be fetched, started or stopped."""


def kafka_version(pom_file: Path = POM_FILE) -> str:
    """The broker release the project pins (``kafka.version`` in the broker POM)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_file.read_text())
    if match is None:
        raise KafkaBrokerError(f"{pom_file} does not name a kafka.version")
    return match.group(1).strip()


def cache_dir() -> Path:
    """Where fetched broker jars are kept, shared by every work dir."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "customer360" / "kafka"


def ensure_libs(pom_file: Path = POM_FILE) -> Path:
    """The folder of the broker's jars, fetched through Maven on first use."""
    version = kafka_version(pom_file)
    libs = cache_dir() / version / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaBrokerError(
            "Maven (mvn) is needed once to fetch the Kafka broker jars; install it"
            " (apt-get install maven) and run `c360 kafka start` again"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom_file),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        detail = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
        reason = detail[0] if detail else f"mvn exited with {result.returncode}"
        raise KafkaBrokerError(f"could not fetch Kafka {version} through Maven: {reason}")
    (staging / ".complete").touch()
    # Another process may have finished the same fetch meanwhile; either copy will do.
    try:
        staging.rename(libs)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def java_executable() -> str:
    """The java binary (JAVA_HOME first), which must be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if java is None:
        raise KafkaBrokerError("Java 17 or newer is needed to run the Kafka broker; install it")
    return java


@dataclass(frozen=True)
class KafkaBroker:
    """One local broker: its state folder and its two ports."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    heap: str = "1g"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.properties"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Fetch the jars if needed, format the storage once, start and wait until it serves."""
        if self.pid() is not None:
            self._wait_until_ready(time.monotonic() + timeout)
            return
        if port_in_use(self.host, self.port):
            raise KafkaBrokerError(
                f"port {self.port} on {self.host} is already in use by another program"
            )
        libs = ensure_libs()
        java = java_executable()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage(java, libs)
        output = (self.log_dir / "kafka.out").open("ab")
        process = subprocess.Popen(
            [
                *self._java_command(java, libs),
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                "kafka.Kafka",
                str(self.config_file),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            # Its own session: a Ctrl-C meant for the CLI does not reach the broker.
            start_new_session=True,
        )
        output.close()
        self.pid_file.write_text(str(process.pid))
        try:
            self._wait_until_ready(time.monotonic() + timeout, process)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout``); False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while process_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def pid(self) -> int | None:
        """The pid of this broker's running process, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A stale pid file may name a process that is not (or no longer) this broker.
        arguments = command_line(pid)
        if arguments is None:
            return None
        if "kafka.Kafka" not in arguments or str(self.config_file) not in arguments:
            return None
        return pid if process_alive(pid) else None

    def is_ready(self) -> bool:
        """True when the broker answers a metadata request."""
        return _broker_answers(self.bootstrap_servers)

    def _java_command(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_dir}",
        ]

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **BROKER_DEFAULTS,
        }
        lines = ["# Written by `c360 kafka start`; edits are overwritten on the next start."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        self.config_file.write_text("\n".join(lines) + "\n")
        self.log4j_file.write_text(LOG4J2_CONFIG.format(log_dir=self.log_dir))

    def _format_storage(self, java: str, libs: Path) -> None:
        # A KRaft cluster id is a base64url UUID without padding, as `kafka-storage random-uuid`.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                *self._java_command(java, libs),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # One argument: an id may start with '-', which would read as an option.
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.config_file),
            ],
            capture_output=True,
            text=True,
            cwd=self.home,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise KafkaBrokerError(
                f"formatting the Kafka storage in {self.data_dir} failed:"
                f" {detail[-1] if detail else result.returncode}"
            )

    def _wait_until_ready(self, deadline: float, process: subprocess.Popen | None = None) -> None:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise KafkaBrokerError(
                    f"the Kafka broker exited with code {process.returncode}: {self._log_tail()}"
                )
            if port_in_use(self.host, self.port) and self.is_ready():
                return
            time.sleep(0.5)
        raise KafkaBrokerError(
            f"the Kafka broker did not answer on {self.bootstrap_servers} in time:"
            f" {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        for name in ("kafka.out", "server.log"):
            path = self.log_dir / name
            if path.exists():
                lines = [line for line in path.read_text(errors="replace").splitlines() if line]
                errors = [line for line in lines if "ERROR" in line or "Exception" in line]
                if errors or lines:
                    return (errors or lines)[-1][:500]
        return "no log output"


def broker_for_settings(settings: Settings | None = None) -> KafkaBroker:
    """The local broker the settings point at; refused when they name a remote broker."""
    settings = settings or get_settings()
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in LOCAL_HOSTS or not port.isdigit():
        raise KafkaBrokerError(
            f"KAFKA_BOOTSTRAP_SERVERS names {first}, which is not a local broker this"
            " command manages; start that broker where it runs"
        )
    return KafkaBroker(
        home=Path(settings.work_dir) / "kafka", port=int(port), controller_port=int(port) + 1
    )


def _broker_answers(bootstrap_servers: str) -> bool:
    # Imported here: starting the broker from the CLI needs no client until this point.
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="c360-broker-probe",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=2000,
        )
    except (KafkaError, OSError):
        return False
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        return any(not broker.get("is_fenced") for broker in brokers)
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
