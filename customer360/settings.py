"""One settings object for every part of the platform.

Every value comes from an environment variable prefixed ``C360_`` (or a ``.env`` file);
the CLI, the Airflow DAG, the API, the streaming jobs and Docker Compose all read the
same names (``C360_<FIELD NAME>``); ``.env.example`` lists those the Compose stack sets.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Typed configuration; see ``.env.example`` for the documented variable names."""

    model_config = SettingsConfigDict(
        env_prefix="C360_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Database: a configured URL wins; otherwise the embedded server under work_dir.
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; empty means the embedded server."
    )
    work_dir: Path = Field(
        default=PROJECT_ROOT / ".c360",
        description="Runtime state: embedded database, Airflow home, Kafka logs, pid files.",
    )
    embedded_pg_port: int = Field(default=54320, description="Port of the embedded PostgreSQL.")
    embedded_pg_database: str = "customer360"

    # Input files and their mapping onto the canonical contract.
    data_dir: Path = Field(default=PROJECT_ROOT / "data" / "generated")
    landing_dir: Path | None = Field(
        default=None,
        description="Airflow landing root: files of a date are in <landing_dir>/<YYYY-MM-DD>/.",
    )
    sources_config: Path | None = Field(
        default=None, description="YAML mapping user files onto the canonical columns."
    )

    # Staging thresholds: fewer rows than this fails the whole batch.
    min_customers: int = 1000
    min_products: int = 100
    min_transactions: int = 1000

    # The loader checks each source in this many shares of its keys, side by side.
    load_parallelism: int = Field(
        default=2, ge=1, description="Shares each source's checks run in (the server's cores)."
    )

    # REST API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_auth_mode: Literal["api_key", "jwt", "none"] = "api_key"
    api_keys: str = Field(default="c360-demo-key", description="Comma-separated accepted API keys.")
    jwt_secret: str = "change-me-in-production"
    jwt_algorithm: str = "HS256"
    api_rate_limit_per_minute: int = Field(
        default=6000, ge=1, description="Requests a minute each client may make, per worker."
    )
    # Plenty for a typo or a key being rotated, far too few to guess a key or a secret.
    api_failed_auth_per_minute: int = Field(
        default=30,
        ge=1,
        description="Failed authentications a minute one client address may make, per worker.",
    )
    api_cors_origins: str = Field(default="http://localhost:3000", description="Comma-separated.")
    api_pool_min: int = 2
    api_pool_max: int = 16
    api_workers: int = Field(
        default=1, description="uvicorn worker processes for `c360 api serve`."
    )
    api_pool_timeout: float = Field(
        default=3.0, description="Seconds a request waits for a database connection before a 503."
    )
    api_statement_timeout_ms: int = Field(
        default=10_000, description="Longest a single API query may run before it is cancelled."
    )
    api_jwt_ttl_minutes: int = Field(
        default=60, description="Lifetime of tokens printed by `c360 api token --jwt`."
    )

    # Kafka: KAFKA_BOOTSTRAP_SERVERS is honoured too, as the Kafka tooling expects.
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("C360_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_topic: str = "clickstream_events"
    kafka_dlq_topic: str = "clickstream_events_dlq"
    kafka_consumer_group: str = "clickstream_consumer_group"

    # Airflow.
    airflow_port: int = 8080
    smtp_host: str | None = None
    alert_email: str | None = None

    @field_validator("work_dir", "data_dir", "landing_dir", "sources_config")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Resolved against the directory the settings are read in: the database server and
        # the broker run in other directories, and the Airflow tasks in their own.
        return None if path is None else path.resolve()

    @property
    def uses_embedded_database(self) -> bool:
        return not self.database_url

    @property
    def dsn(self) -> str:
        """The libpq URL every component connects with."""
        if self.database_url:
            return self.database_url
        return (
            f"postgresql://postgres@127.0.0.1:{self.embedded_pg_port}/{self.embedded_pg_database}"
        )

    @property
    def sqlalchemy_url(self) -> str:
        return "postgresql+psycopg2://" + self.dsn.split("://", 1)[1]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
