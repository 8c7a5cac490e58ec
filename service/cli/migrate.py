"""`keyledger migrate`: apply the pending migrations and exit."""

import argparse
import asyncio
from contextlib import ExitStack

from service.cli.database import resolve_database
from service.config import from_environment
from service.store import migrations


def migrate(args: argparse.Namespace) -> int:
    settings = from_environment()
    with ExitStack() as stack:
        settings = resolve_database(settings, stack)
        applied = asyncio.run(migrations.migrate(settings.database_url))
    print(f"Applied: {', '.join(applied)}" if applied else "The database is up to date.")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("migrate", help="apply pending migrations and exit").set_defaults(run=migrate)
