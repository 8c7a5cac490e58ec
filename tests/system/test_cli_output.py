"""What the `keyledger` tools print, run as an operator runs them (subprocesses, the embedded server):
data on standard output, status on standard error, so that `keyledger export > log.ndjson` is NDJSON."""

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from projections.usage import project_batch
from service.store import db, migrations
from service.store.embedded import embedded_postgres
from tests.mixed_log import MixedLog
from tests.processes import ROOT

ACCOUNT = "acct_0000"  # the first account MixedLog opens


async def _write_a_few_events(database_url: str) -> None:
    await migrations.migrate(database_url)
    pool = await db.create_pool(database_url, max_size=2)
    try:
        log = MixedLog(database_url, pool, seed=11)
        await log.open_accounts(3, writers=1)
        await log.write_usage(40, writers=1)
    finally:
        await pool.close()
    connection = await db.connect(database_url)
    try:
        async with connection.transaction():  # what the live projector would have done: usage reports
            await project_batch(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """The data folder of an embedded server (stopped) whose log has a few accounts' events.

    Not under pytest's temporary folder: run as root, the server runs as the user pgserver, which
    needs to traverse the folders above its data, and pytest makes /tmp/pytest-of-root private again
    whenever a session starts (another engineer's, on a shared machine)."""
    with tempfile.TemporaryDirectory(prefix="keyledger-cli-") as folder:
        with embedded_postgres(Path(folder)) as database_url:
            asyncio.run(_write_a_few_events(database_url))
        yield Path(folder)


def keyledger(data_dir: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    """`keyledger ARGS` on the embedded server in data_dir: no KEYLEDGER_DATABASE_URL."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("KEYLEDGER_")}
    environment |= {"KEYLEDGER_DATA_DIR": str(data_dir), **variables}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_export_to_a_pipe_is_ndjson_on_every_line_and_audit_verify_accepts_it(data_dir, tmp_path):
    exported = keyledger(data_dir, "export")
    assert exported.returncode == 0, exported.stderr
    assert "Starting the embedded PostgreSQL" in exported.stderr  # the status line that went to stdout
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    [count] = re.findall(r"^exported (\d+) events$", exported.stderr, re.MULTILINE)
    assert len(records) == int(count) > 40
    assert {record["type"] for record in records} >= {
        "SubscriptionActivated",
        "ApiKeyCreated",
        "UsageRecorded",
    }
    (tmp_path / "log.ndjson").write_text(exported.stdout)
    verified = keyledger(data_dir, "audit", "verify", str(tmp_path / "log.ndjson"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _report(data_dir: Path, format_: str) -> subprocess.CompletedProcess:
    today = datetime.now(UTC).date()
    days = ["--from", str(today - timedelta(days=31)), "--to", str(today + timedelta(days=1))]
    reported = keyledger(data_dir, "usage-report", "--account", ACCOUNT, *days, "--format", format_)
    assert reported.returncode == 0, reported.stderr
    assert "Starting the embedded PostgreSQL" in reported.stderr
    return reported


def test_a_json_usage_report_on_stdout_is_one_json_document(data_dir):
    report = json.loads(_report(data_dir, "json").stdout)
    assert report["account_id"] == ACCOUNT and report["keys"] and report["total"]["requests"] > 0


def test_a_csv_usage_report_on_stdout_is_only_the_csv(data_dir):
    rows = list(csv.reader(_report(data_dir, "csv").stdout.splitlines()))
    assert rows[0] == ["key_id", "name", "date", "requests", "cost_chf"]
    assert rows[-1][:3] == ["", "all keys", "total"] and int(rows[-1][3]) > 0
    assert all(len(row) == 5 for row in rows)


def test_serve_with_a_malformed_port_says_so_in_one_line_without_a_traceback(data_dir):
    refused = keyledger(data_dir, "serve", KEYLEDGER_PORT="abc")
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [
        "keyledger serve: KEYLEDGER_PORT='abc' must be a whole number from 1 to 65535 (unset, it is 8080)."
    ]
    assert refused.stdout == ""
