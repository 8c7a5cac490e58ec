"""The shadow schema of a replay: a copy of every projection table, compared row by row with the live
one, and copied over it on request.

The shadow tables are UNLOGGED: they are scratch space rebuilt on every run, so writing them costs no
WAL. They stay after the run, for anyone who wants to look at a difference in SQL.
"""

from dataclasses import dataclass

import asyncpg

SHADOW = "keyledger_replay"
LIVE = "public"
# Every projection built from the log. A new projection table belongs here, or replay ignores it.
TABLES = ("api_keys", "subscriptions", "key_usage_totals", "key_usage_daily", "key_usage_monthly")
CHECKPOINTS = "projector_checkpoints"
SHOWN_ROWS = 20  # per table and side; the rest are counted


@dataclass(frozen=True)
class TableDifference:
    """The rows of one table that only one side has (a changed row is on both lists, by its key)."""

    table: str
    key: tuple[str, ...]  # the primary key's columns
    live_only: list[dict]  # live rows that the replay does not give (the first SHOWN_ROWS, by key)
    replay_only: list[dict]  # replayed rows that the live table lacks
    live_only_count: int
    replay_only_count: int


async def create(connection: asyncpg.Connection, checkpoints: list[str]) -> None:
    """Drop and recreate the shadow schema: empty tables shaped like the live ones (indexes, constraints
    and defaults included) and a checkpoint table holding `checkpoints` at position 0."""
    async with connection.transaction():
        await connection.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
        await connection.execute(f"CREATE SCHEMA {SHADOW}")
        for table in (*TABLES, CHECKPOINTS):
            await connection.execute(
                f"CREATE UNLOGGED TABLE {SHADOW}.{table} (LIKE {LIVE}.{table} INCLUDING ALL)"
            )
        await connection.executemany(
            f"INSERT INTO {SHADOW}.{CHECKPOINTS} (projector, position) VALUES ($1, 0)",
            [(name,) for name in checkpoints],
        )


async def differences(connection: asyncpg.Connection) -> list[TableDifference]:
    """Every table where the shadow and the live rows differ, compared with EXCEPT ALL both ways (so a
    duplicated row counts too); no column is left out."""
    found = []
    for table in TABLES:
        key = await _primary_key(connection, table)
        live_only, live_only_count = await _rows_only_in(connection, LIVE, SHADOW, table, key)
        replay_only, replay_only_count = await _rows_only_in(connection, SHADOW, LIVE, table, key)
        if live_only_count or replay_only_count:
            found.append(
                TableDifference(table, key, live_only, replay_only, live_only_count, replay_only_count)
            )
    return found


async def replace(connection: asyncpg.Connection, table: str) -> None:
    """Make the live rows those of the shadow. DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe (a reader
    whose snapshot is older would see an empty table) and its exclusive lock stops every reader until
    the commit. Grants, indexes and the views built on the table are not touched."""
    await connection.execute(f"DELETE FROM {LIVE}.{table}")
    await connection.execute(f"INSERT INTO {LIVE}.{table} SELECT * FROM {SHADOW}.{table}")


async def _primary_key(connection: asyncpg.Connection, table: str) -> tuple[str, ...]:
    rows = await connection.fetch(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
           WHERE i.indrelid = $1::regclass AND i.indisprimary
           ORDER BY array_position(i.indkey::smallint[], a.attnum)""",
        f"{LIVE}.{table}",
    )
    return tuple(row["attname"] for row in rows)


async def _rows_only_in(
    connection: asyncpg.Connection, side: str, other: str, table: str, key: tuple[str, ...]
) -> tuple[list[dict], int]:
    rows = await connection.fetch(
        f"""SELECT only_here.*, count(*) OVER () AS rows_only_here FROM (
                SELECT * FROM {side}.{table} EXCEPT ALL SELECT * FROM {other}.{table}) AS only_here
            ORDER BY {", ".join(key)} LIMIT $1""",
        SHOWN_ROWS,
    )
    count = rows[0]["rows_only_here"] if rows else 0
    return [{name: value for name, value in row.items() if name != "rows_only_here"} for row in rows], count
