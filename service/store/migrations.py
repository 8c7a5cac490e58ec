"""Numbered SQL migrations from the `sql` package, applied once each, in order, under an advisory lock.

Each applied migration is recorded with the SHA-256 of its text. A migration file that differs from
what was applied (edited afterwards), or an applied one this keyledger does not ship (the database
is newer than the code), stops `migrate` and `serve` with a message that names it.
"""

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from events.log import MIGRATION_LOCK

SQL = resources.files("sql")
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

log = logging.getLogger(__name__)


class MigrationError(Exception):
    """The migrations cannot be applied as they are; the message says which and what to do."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def available(folder: Traversable = SQL) -> list[Migration]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name} must be named NNN_words.sql")
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    numbers = [migration.number for migration in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError("two migration files share a number")
    return found


_RECORD_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now());
    -- Databases migrated before checksums were recorded get them on their next migrate.
    ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text"""


async def migrate(database_url: str, folder: Traversable = SQL) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied now."""
    connection = await asyncpg.connect(database_url)
    try:
        # Session lock: two processes starting together apply each migration exactly once.
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await connection.execute(_RECORD_TABLE)
        shipped = available(folder)
        applied_before = await _check_applied(connection, shipped)
        applied = []
        for migration in shipped:
            if migration.number in applied_before:
                continue
            async with connection.transaction():
                await connection.execute(migration.text)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.number,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration %s", migration.name)
            applied.append(migration.name)
        return applied
    finally:
        await connection.close()  # also releases the advisory lock


async def _check_applied(connection: asyncpg.Connection, shipped: list[Migration]) -> set[int]:
    """The numbers already applied, once each is proven to be what this keyledger ships."""
    by_number = {migration.number: migration for migration in shipped}
    rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    for row in rows:
        migration = by_number.get(row["version"])
        if migration is None:
            raise MigrationError(
                f"The database has migration {row['name']}, which this keyledger does not ship: "
                "the database was migrated by a newer keyledger. Run that version, or restore a backup."
            )
        if row["checksum"] is None:  # applied before checksums were recorded: take it as it is now
            await connection.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                migration.number,
                migration.checksum,
            )
        elif row["checksum"] != migration.checksum:
            raise MigrationError(
                f"Migration {migration.name} was edited after it was applied to this database "
                f"(checksum {migration.checksum[:12]}…, applied {row['checksum'][:12]}…). Restore the "
                "file as it was, and put the change in a new numbered migration."
            )
    return {row["version"] for row in rows}


async def pending(connection: asyncpg.Connection, folder: Traversable = SQL) -> list[int]:
    """Migration numbers shipped but not recorded in the database."""
    done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
    return [migration.number for migration in available(folder) if migration.number not in done]
