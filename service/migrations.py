"""Numbered SQL migrations from `sql/`, applied once each, in order, under an advisory lock."""

import logging
import re
from pathlib import Path

import asyncpg

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATION_LOCK = 0x6B65796C65646701  # any constant; shared by every keyledger process
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

log = logging.getLogger(__name__)


def available(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} must be named NNN_words.sql")
        found.append((int(match.group(1)), path))
    numbers = [number for number, _ in found]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"two migrations share a number in {sql_dir}")
    return found


async def migrate(database_url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied now."""
    connection = await asyncpg.connect(database_url)
    try:
        # Session lock: two processes starting together apply each migration exactly once.
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for number, path in available(sql_dir):
            if number in done:
                continue
            async with connection.transaction():
                await connection.execute(path.read_text())
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, path.name
                )
            log.info("applied migration %s", path.name)
            applied.append(path.name)
        return applied
    finally:
        await connection.close()  # also releases the advisory lock


async def pending(connection: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[int]:
    """Migration numbers present in `sql/` but not recorded in the database."""
    done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
    return [number for number, _ in available(sql_dir) if number not in done]
