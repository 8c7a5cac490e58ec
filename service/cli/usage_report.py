"""`keyledger usage-report`: one account's usage per key and UTC day, with totals, from the analytics views.

Days (and keys) without usage in the range are left out. CHF amounts are exact decimal strings with
9 places.
"""

import argparse
import asyncio
import contextlib
import csv
import io
import sys
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import asyncpg
import msgspec

from events.usage import chf_text
from projections import usage
from service.cli.database import open_database

PROG = "keyledger usage-report"


@dataclass
class Day:
    day: date
    requests: int
    cost_chf: Decimal


class _Totals:
    """Requests and CHF summed over `days`."""

    days: list[Day]

    @property
    def requests(self) -> int:
        return sum(day.requests for day in self.days)

    @property
    def cost_chf(self) -> Decimal:
        return sum((day.cost_chf for day in self.days), Decimal(0))


@dataclass
class KeyUsage(_Totals):
    key_id: str
    name: str | None
    days: list[Day] = field(default_factory=list)


@dataclass
class Report(_Totals):
    account_id: str
    first: date
    last: date
    keys: list[KeyUsage]

    @property
    def days(self) -> list[Day]:
        return [day for key in self.keys for day in key.days]


async def fetch(database_url: str, account_id: str, first: date, last: date) -> Report:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await usage.account_days(connection, account_id, first, last)
    finally:
        await connection.close()
    keys: dict[str, KeyUsage] = {}
    for row in rows:
        key = keys.setdefault(row["key_id"], KeyUsage(row["key_id"], row["name"]))
        key.days.append(Day(row["day"], row["requests"], row["cost_chf"]))
    return Report(account_id, first, last, list(keys.values()))


def as_rows(report: Report) -> list[list[str]]:
    """A header, each key's days then its total (date "total"), and last the total of all keys."""
    rows = [["key_id", "name", "date", "requests", "cost_chf"]]
    for key in report.keys:
        name = key.name or ""
        rows += [
            [key.key_id, name, str(day.day), str(day.requests), chf_text(day.cost_chf)] for day in key.days
        ]
        rows.append([key.key_id, name, "total", str(key.requests), chf_text(key.cost_chf)])
    rows.append(["", "all keys", "total", str(report.requests), chf_text(report.cost_chf)])
    return rows


def as_csv(report: Report) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(as_rows(report))
    return text.getvalue()


def as_table(report: Report) -> str:
    rows = as_rows(report)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    title = f"Usage of {report.account_id} from {report.first} to {report.last} (UTC days with usage)"
    lines = [title, ""]
    for row in rows:
        text = [cell.ljust(width) for cell, width in zip(row[:3], widths[:3], strict=True)]
        numbers = [cell.rjust(width) for cell, width in zip(row[3:], widths[3:], strict=True)]
        lines.append("  ".join(text + numbers))
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> str:
    document = {
        "account_id": report.account_id,
        "from": str(report.first),
        "to": str(report.last),
        "keys": [
            {
                "key_id": key.key_id,
                "name": key.name,
                "days": [
                    {"date": str(day.day), "requests": day.requests, "cost_chf": chf_text(day.cost_chf)}
                    for day in key.days
                ],
                "total": {"requests": key.requests, "cost_chf": chf_text(key.cost_chf)},
            }
            for key in report.keys
        ],
        "total": {"requests": report.requests, "cost_chf": chf_text(report.cost_chf)},
    }
    return msgspec.json.format(msgspec.json.encode(document)).decode() + "\n"


FORMATS = {"table": as_table, "csv": as_csv, "json": as_json}


def usage_report(args: argparse.Namespace) -> int:
    if args.first > args.last:
        raise SystemExit(
            f"{PROG}: --from {args.first} is after --to {args.last}; give the earlier day as --from"
        )
    with contextlib.ExitStack() as stack:
        database_url = open_database(stack)
        try:
            report = asyncio.run(fetch(database_url, args.account, args.first, args.last))
        except asyncpg.UndefinedTableError:
            raise SystemExit(
                f"{PROG}: the analytics views are missing; run `keyledger migrate` first"
            ) from None
    if not report.keys:
        print(
            f"{PROG}: account {args.account!r} has no usage from {args.first} to {args.last}", file=sys.stderr
        )
    sys.stdout.write(FORMATS[args.format](report))
    return 0


def _utc_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write a UTC day as YYYY-MM-DD") from None


def register(commands) -> None:
    report = commands.add_parser("usage-report", help="one account's usage per key and UTC day, with totals")
    report.add_argument("--account", required=True, help="the account id")
    day = {"required": True, "type": _utc_day, "metavar": "YYYY-MM-DD"}
    report.add_argument("--from", dest="first", help="first UTC day", **day)
    report.add_argument("--to", dest="last", help="last UTC day (included)", **day)
    report.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    report.set_defaults(run=usage_report)
