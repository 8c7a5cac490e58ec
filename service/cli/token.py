"""`keyledger token`: mint an HS256 JWT with KEYLEDGER_JWT_SECRET, for scripts and tests."""

import argparse

from service.config import from_environment
from service.http.auth import issue_token


def token(args: argparse.Namespace) -> int:
    settings = from_environment()
    if settings.development:
        raise SystemExit(
            "keyledger token: set KEYLEDGER_JWT_SECRET to the secret the service uses; tokens need it."
        )
    roles = args.role or None
    print(issue_token(settings.jwt_secret, args.account, ttl_seconds=args.ttl, roles=roles))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("token", help="mint an HS256 JWT with KEYLEDGER_JWT_SECRET")
    parser.add_argument("--account", required=True, help="the account_id claim")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    parser.add_argument("--role", action="append", help="a role to put in the roles claim")
    parser.set_defaults(run=token)
