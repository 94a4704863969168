"""Apply the numbered SQL files in ``sql/`` in order and record what was applied.

Every file is written to be safe to apply again; a file is re-applied when its content
changes, so editing a view and migrating again brings the database up to date.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from customer360.db import connect
from customer360.settings import PROJECT_ROOT, Settings, get_settings

SQL_DIR = PROJECT_ROOT / "sql"

# One migration at a time, even when the CLI, a DAG and the tests start together.
MIGRATION_LOCK_ID = 360_001


@dataclass(frozen=True)
class AppliedFile:
    name: str
    checksum: str
    changed: bool


def schema_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The schema files, in the order their numeric prefix gives."""
    return sorted(path for path in sql_dir.glob("[0-9][0-9]_*.sql"))


def migrate(settings: Settings | None = None, sql_dir: Path = SQL_DIR) -> list[AppliedFile]:
    """Apply every new or changed schema file, each in its own transaction."""
    settings = settings or get_settings()
    conn = connect(settings)
    applied: list[AppliedFile] = []
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            cur.execute("create schema if not exists audit")
            cur.execute(
                """
                create table if not exists audit.schema_migrations (
                    file_name  text primary key,
                    checksum   text not null,
                    applied_at timestamptz not null default now()
                )
                """
            )
            conn.commit()
            cur.execute("select file_name, checksum from audit.schema_migrations")
            recorded = dict(cur.fetchall())
            for path in schema_files(sql_dir):
                text = path.read_text(encoding="utf-8")
                checksum = hashlib.sha256(text.encode()).hexdigest()
                changed = recorded.get(path.name) != checksum
                if changed:
                    cur.execute(text)
                    cur.execute(
                        """
                        insert into audit.schema_migrations (file_name, checksum)
                        values (%s, %s)
                        on conflict (file_name)
                        do update set checksum = excluded.checksum, applied_at = now()
                        """,
                        (path.name, checksum),
                    )
                    conn.commit()
                applied.append(AppliedFile(path.name, checksum, changed))
            cur.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            conn.commit()
    finally:
        conn.close()
    return applied
