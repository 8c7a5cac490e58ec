"""`keyledger replay [--swap] [--quiet]`: rebuild every projection from the log, show how the live
tables differ, and with --swap put the rebuilt rows in their place."""

import argparse
import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date

from projections import replay as replaying
from projections.shadow import SHADOW, TableDifference
from service.cli.database import open_database


def run(args: argparse.Namespace) -> int:
    # Imported here: rich costs every keyledger process 2 MB, and only replay draws with it.
    from service.cli.replay_progress import progress_bar

    with ExitStack() as stack:
        url = open_database(stack)
        with progress_bar(args.quiet) as bar:
            task = bar.add_task("replay", total=None)
            try:
                outcome = asyncio.run(
                    replaying.replay(
                        url,
                        swap=args.swap,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
                )
            except replaying.ReplayError as error:
                raise SystemExit(f"keyledger replay: {error}") from None
    print("\n".join(describe(outcome)))
    return 0 if outcome.swapped or not outcome.differences else 1


def describe(outcome: replaying.Outcome) -> Iterator[str]:
    where = f"Replayed the log up to position {outcome.position}"
    if outcome.usage_position < outcome.position:
        where += f" (usage up to {outcome.usage_position}, where the live usage projector stands)"
    yield where + "."
    if not outcome.differences:
        yield "No differences: the live projections are exactly what the log gives."
        return
    for difference in outcome.differences:
        sides = []
        if difference.live_only_count:
            sides.append(f"{difference.live_only_count} live row(s) that the log does not give")
        if difference.replay_only_count:
            sides.append(f"{difference.replay_only_count} row(s) that the log gives and live lacks")
        yield f"{difference.table}: {', '.join(sides)}"
        yield from (f"  {line}" for line in _row_lines(difference))
    tables = ", ".join(difference.table for difference in outcome.differences)
    if outcome.swapped:
        yield f"Replaced the rows of {tables} with the replayed ones: the live projections now match the log."
    else:
        yield f"The replayed rows are in the schema {SHADOW}. To make them live: keyledger replay --swap"


def _row_lines(difference: TableDifference) -> Iterator[str]:
    """One line per key: what changed, or which side alone has the row."""

    def key_of(row: dict) -> tuple:
        return tuple(row[column] for column in difference.key)

    live = {key_of(row): row for row in difference.live_only}
    replayed = {key_of(row): row for row in difference.replay_only}
    for key in sorted(live.keys() | replayed.keys()):
        name = " ".join(
            f"{column}={_shown(value)}" for column, value in zip(difference.key, key, strict=True)
        )
        if key in live and key in replayed:
            changes = [
                f"{column} live {_shown(value)}, replayed {_shown(replayed[key][column])}"
                for column, value in live[key].items()
                if value != replayed[key][column]
            ]
            yield f"{name}: differs: {'; '.join(changes)}"
        elif key in live:
            yield f"{name}: only in live (no event gives it): {_fields(live[key], difference.key)}"
        else:
            yield f"{name}: missing from live: {_fields(replayed[key], difference.key)}"
    hidden = difference.live_only_count + difference.replay_only_count - len(live) - len(replayed)
    if hidden:
        yield (
            f"… {hidden} more differing row(s) not shown: "
            f"{SHADOW}.{difference.table} EXCEPT ALL public.{difference.table}, and the other way round"
        )


def _fields(row: dict, key: tuple[str, ...]) -> str:
    return " ".join(f"{column}={_shown(value)}" for column, value in row.items() if column not in key)


def _shown(value: object) -> str:
    if isinstance(value, bytes):  # digests: enough to tell two apart
        return f"\\x{value[:4].hex()}…"
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    if isinstance(value, str):
        return repr(value)
    return "null" if value is None else str(value)


def register(commands) -> None:
    parser = commands.add_parser(
        "replay",
        help="rebuild every projection from the log and compare it with the live tables",
        description=f"Rebuild every projection from the event log in the schema {SHADOW} and print how "
        "the live tables differ from it: exit code 0 when they do not, 1 when they do. With --swap, "
        "replace the differing live tables with the rebuilt rows (exit code 0 once done).",
    )
    parser.add_argument("--swap", action="store_true", help="replace the live projections with the replay")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
