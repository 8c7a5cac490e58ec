"""Migrations: each applied once, in order, recorded with the SHA-256 of its file; an applied migration
whose file was edited, or one this keyledger does not ship, stops `migrate` with a message naming it."""

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from service.store import migrations
from service.store.migrations import MigrationError
from tests.processes import ROOT

SHIPPED = [entry for entry in migrations.SQL.iterdir() if entry.name.endswith(".sql")]
CHECKSUMS = {entry.name: hashlib.sha256(entry.read_bytes()).hexdigest() for entry in SHIPPED}


def copy_of_the_migrations(folder: Path, edited: str | None = None) -> Path:
    """The shipped migration files in `folder`, with a line added to the one named `edited`."""
    folder.mkdir()
    for entry in SHIPPED:
        text = entry.read_text(encoding="utf-8")
        (folder / entry.name).write_text(text + ("\n-- an afterthought\n" if entry.name == edited else ""))
    return folder


async def recorded(database_url: str) -> dict[str, str | None]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT name, checksum FROM schema_migrations ORDER BY version")
    finally:
        await connection.close()
    return {row["name"]: row["checksum"] for row in rows}


async def test_migrations_started_together_apply_each_once(empty_database_url):
    results = await asyncio.gather(*(migrations.migrate(empty_database_url) for _ in range(4)))
    applied = sorted(migration for result in results for migration in result)
    assert applied == sorted(CHECKSUMS) and len(applied) >= 5
    assert await migrations.migrate(empty_database_url) == []


async def test_each_migration_is_recorded_with_the_sha256_of_its_file(empty_database_url):
    await migrations.migrate(empty_database_url)
    assert await recorded(empty_database_url) == CHECKSUMS


async def test_an_applied_migration_whose_file_was_edited_is_refused_naming_it(empty_database_url, tmp_path):
    await migrations.migrate(empty_database_url)
    folder = copy_of_the_migrations(tmp_path / "sql", edited="003_usage.sql")
    (folder / "099_later.sql").write_text("CREATE TABLE later (id integer);\n")
    with pytest.raises(MigrationError, match=r"^Migration 003_usage\.sql was edited after it was applied"):
        await migrations.migrate(empty_database_url, folder)
    assert "099_later.sql" not in await recorded(empty_database_url), (
        "a later migration ran after the refusal"
    )


def test_keyledger_migrate_names_the_edited_migration_in_one_line(empty_database_url, tmp_path):
    # This database was migrated with a 002 that is not the one this keyledger ships.
    asyncio.run(
        migrations.migrate(empty_database_url, copy_of_the_migrations(tmp_path / "sql", "002_api_keys.sql"))
    )
    finished = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        cwd=ROOT,
        env={**os.environ, "KEYLEDGER_DATABASE_URL": empty_database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (finished.returncode, finished.stdout) == (2, "")
    [line] = finished.stderr.splitlines()
    assert line.startswith("keyledger migrate: Migration 002_api_keys.sql was edited after it was applied")


@pytest.mark.parametrize(
    "before_checksums",
    [
        "ALTER TABLE schema_migrations DROP COLUMN checksum",  # as such a database is
        "UPDATE schema_migrations SET checksum = NULL",  # a run interrupted after adding the column
    ],
)
async def test_a_database_migrated_before_checksums_gets_them(empty_database_url, before_checksums):
    await migrations.migrate(empty_database_url)
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(before_checksums)
    finally:
        await connection.close()
    assert await migrations.migrate(empty_database_url) == []
    assert await recorded(empty_database_url) == CHECKSUMS


async def test_a_migration_this_keyledger_does_not_ship_is_refused_naming_it(empty_database_url, tmp_path):
    newer = copy_of_the_migrations(tmp_path / "sql")
    (newer / "099_later.sql").write_text("CREATE TABLE later (id integer);\n")
    await migrations.migrate(empty_database_url, newer)  # as a newer keyledger would
    with pytest.raises(
        MigrationError, match=r"has migration 099_later\.sql, which this keyledger does not ship"
    ):
        await migrations.migrate(empty_database_url)
