"""The database a command works on: the configured one, or the embedded server started for it."""

import sys
from contextlib import ExitStack
from dataclasses import replace

from service.config import Settings, from_environment
from service.store.embedded import embedded_postgres


def open_database(stack: ExitStack) -> str:
    """The URL of the configured database, starting the embedded one (until `stack` closes) if none is.

    For tools (export, audit, replay, reports): they connect as the database owner, not as the
    service role."""
    return resolve_database(from_environment(), stack).database_url


def resolve_database(settings: Settings, stack: ExitStack) -> Settings:
    if settings.database_url:
        return settings
    # Standard error: what a command writes to standard output is its data (`keyledger export > log`).
    print(f"Starting the embedded PostgreSQL in {settings.data_dir.resolve()} …", file=sys.stderr, flush=True)
    return replace(settings, database_url=stack.enter_context(embedded_postgres(settings.data_dir)))
