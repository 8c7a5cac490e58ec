"""`keyledger export` and `keyledger audit digest|verify`."""

import argparse
import asyncio
import sys
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import msgspec

from service.app import audit
from service.cli import checkpoints
from service.cli.database import open_database
from service.store import db


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time; write e.g. 2026-11-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. 2026-11-01T00:00:00Z")
    return moment


def _connect_and_run(work) -> int:

    async def run(url: str) -> int:
        connection = await db.connect(url)
        try:
            return await work(connection)
        finally:
            await connection.close()

    with ExitStack() as stack:
        return asyncio.run(run(open_database(stack)))


def export(args: argparse.Namespace) -> int:
    output = open(args.output, "wb") if args.output else sys.stdout.buffer

    async def work(connection) -> int:
        count = 0
        filters = {"after": args.after, "account_id": args.account, "since": args.since}
        async for record in audit.all_records(connection, **filters):
            output.write(msgspec.json.encode(record) + b"\n")
            count += 1
        output.flush()
        print(f"exported {count} events", file=sys.stderr)
        return 0

    try:
        return _connect_and_run(work)
    finally:
        if args.output:
            output.close()


def digest(args: argparse.Namespace) -> int:
    async def work(connection) -> int:
        print(msgspec.json.encode(await audit.head_digest(connection)).decode())
        return 0

    return _connect_and_run(work)


def _read_digest(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        published = msgspec.json.decode(Path(path).read_bytes())
        return {"position": int(published["position"]), "hash": str(published["hash"])}
    except (OSError, msgspec.DecodeError, KeyError, TypeError, ValueError) as error:
        raise SystemExit(f"keyledger audit verify: cannot read the digest {path}: {error}") from None


def verify(args: argparse.Namespace) -> int:
    if args.key or args.checkpoint or args.history:
        return checkpoints.verify(args)
    published = _read_digest(args.digest)
    if args.db:

        async def work(connection) -> int:
            verdict = await audit.verify_database(connection, published)
            print(verdict)
            return 1 if verdict.broken else 0

        return _connect_and_run(work)
    if not args.file:
        raise SystemExit("keyledger audit verify: name an export FILE, or --db to verify the database")
    try:
        with open(args.file, "rb") as lines:
            verdict = audit.verify_lines(lines, published)
    except OSError as error:
        raise SystemExit(f"keyledger audit verify: cannot read {args.file}: {error}") from None
    except msgspec.DecodeError as error:
        raise SystemExit(f"keyledger audit verify: {args.file} is not an NDJSON export: {error}") from None
    print(verdict)
    return 1 if verdict.broken else 0


def register(commands) -> None:
    exporter = commands.add_parser("export", help="write the event log with its hash chain as NDJSON")
    exporter.add_argument("--account", help="only this account's events")
    exporter.add_argument("--after", type=int, default=0, help="only events after this position")
    exporter.add_argument("--since", type=_aware_time, help="only events recorded at or after (RFC 3339)")
    exporter.add_argument("--output", "-o", help="file to write (default: standard output)")
    exporter.set_defaults(run=export)

    auditor = commands.add_parser("audit", help="publish the head digest, verify an export or the database")
    actions = auditor.add_subparsers(dest="action", required=True)
    actions.add_parser("digest", help="print the log's head (position and hash) to publish").set_defaults(
        run=digest
    )
    verifier = actions.add_parser("verify", help="check an export or the database against the hash chain")
    verifier.add_argument("file", nargs="?", help="an export made by keyledger export")
    verifier.add_argument("--db", action="store_true", help="verify the database instead of a file")
    verifier.add_argument("--digest", help="a JSON file with a published digest (keyledger audit digest)")
    verifier.set_defaults(run=verify)
    checkpoints.register(actions, verifier)
