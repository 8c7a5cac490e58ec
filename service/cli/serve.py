"""`keyledger serve`: migrate, print how to try it, and serve (one process, or N gunicorn workers)."""

import argparse
import asyncio
import os
from contextlib import ExitStack
from dataclasses import replace

from events.account import SetSubscription
from service.app import commands
from service.cli import checkpoints
from service.cli.database import resolve_database
from service.config import Settings, from_environment
from service.http import serving
from service.http.app import create_app
from service.http.auth import issue_token
from service.store import db, migrations

DEMO_ACCOUNT = "acct_demo"


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
    if args.workers > 1:
        from service.cli import gunicorn_master  # only then: gunicorn costs one process 3 MB

        gunicorn_master.share_metrics()  # first: it may start this command again
    settings = from_environment()
    settings = replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    with ExitStack() as stack:
        settings = resolve_database(settings, stack)
        signer = checkpoints.kept_signer(settings, make=True)
        settings = replace(settings, checkpoint_key=signer.secret_text())
        applied = asyncio.run(_prepare_database(settings))
        if applied:
            print(f"Applied migrations: {', '.join(applied)}", flush=True)
        print(_banner(settings, not os.environ.get("KEYLEDGER_SERVICE_TOKEN")), flush=True)
        print(f"\nCheckpoints verify with: {signer.verifier.text()}", flush=True)
        if args.workers > 1:
            gunicorn_master.run(settings, args.workers)  # exits with gunicorn's status
        else:
            serving.serve(create_app(settings), host=settings.host, port=settings.port)
    return 0


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a whole number from 1 to 65535")
    return int(text)


def register(commands_: argparse._SubParsersAction) -> None:
    parser = commands_.add_parser("serve", help="run the HTTP service (embedded PostgreSQL by default)")
    parser.add_argument("--host", help="address to listen on (KEYLEDGER_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port to listen on (KEYLEDGER_PORT, default 8080)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes serving the port (default 1). With more, this process is gunicorn's master: it "
        "binds the port, forks the workers and starts one again if it dies; SIGTERM or SIGINT stops them "
        "gracefully (exit 0). Each holds KEYLEDGER_POOL_MAX_SIZE + 3 database connections.",
    )
    parser.set_defaults(run=serve)
