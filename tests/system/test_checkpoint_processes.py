"""Checkpoints with real processes: `keyledger serve` makes, keeps and prints its signer key (the
verifier key only), `keyledger audit verifier-key` and `audit verify` work against it; a tree writer
killed with SIGKILL in the middle of building resumes after a restart to the very tree a rebuild
gives; proofs served over HTTP are checked by Go's golang.org/x/mod/sumdb/tlog too."""

import asyncio
import base64
import hashlib
import os
import stat
import subprocess
import sys

import asyncpg
import pytest
import requests

from events.note import Signer
from service.store import db, tree
from tests.helpers import CHECKPOINT_SIGNER, SERVICE_TOKEN, auth, wait_until
from tests.processes import ROOT, Service, free_port
from tests.system.test_go_verifier import GOPATH, SOURCE, run

AUDIT = "/api/v1/audit"


def keyledger(*args: str, **variables: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("KEYLEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env={**environment, **variables},
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_key(base_url: str, n: int) -> None:
    path = f"{base_url}/api/v1/accounts/user/api-keys/create/"
    requests.post(path, json={"name": f"key {n}"}, headers=auth("acct_cli"), timeout=10).raise_for_status()


def audit_get(base_url: str, path: str) -> requests.Response:
    answer = requests.get(
        f"{base_url}{AUDIT}/{path}", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10
    )
    answer.raise_for_status()
    return answer


async def test_serve_keeps_its_signer_key_prints_the_verifier_and_audit_verify_checks_it(
    database_url, tmp_path
):
    data = tmp_path / "data"
    variables = {
        "KEYLEDGER_CHECKPOINT_KEY": "",
        "KEYLEDGER_DATA_DIR": str(data),
        "KEYLEDGER_CHECKPOINT_INTERVAL": "0",
    }
    service = Service(database_url, free_port(), tmp_path / "logs", **variables)
    try:
        await service.ready()
        await wait_until(lambda: "Checkpoints verify with: " in service.stdout, within=10)
        [verifier] = [
            line.split(": ", 1)[1]
            for line in service.stdout.splitlines()
            if "Checkpoints verify with" in line
        ]
        key_file = data / "checkpoint-signer.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert Signer.parse(key_file.read_text()).verifier.text() == verifier
        assert keyledger("audit", "verifier-key", KEYLEDGER_DATA_DIR=str(data)).stdout == verifier + "\n"
        first = tmp_path / "first.txt"
        for n in range(3):
            create_key(service.base_url, n)
            if n == 0:
                await wait_until(
                    lambda: b"\n1\n" in audit_get(service.base_url, "checkpoint").content, within=10
                )
                first.write_bytes(audit_get(service.base_url, "checkpoint").content)
        await wait_until(lambda: b"\n3\n" in audit_get(service.base_url, "checkpoint").content, within=10)
        second = tmp_path / "second.txt"
        second.write_bytes(audit_get(service.base_url, "checkpoint").content)
        export = tmp_path / "export.ndjson"
        assert keyledger("export", "-o", str(export), KEYLEDGER_DATABASE_URL=database_url).returncode == 0
        verified = keyledger(
            *("audit", "verify", str(export), "--key", verifier, "--checkpoint", str(first)),
            *("--checkpoint", str(second), "--url", service.base_url),
            KEYLEDGER_AUDIT_TOKEN=SERVICE_TOKEN,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert (
            "extends the log of 1 events" in verified.stdout and "export's first 1 events" in verified.stdout
        )
        other = Signer.generate("keyledger.local/log").verifier.text()
        refused = keyledger("audit", "verify", "--key", other, "--checkpoint", str(second))
        assert refused.returncode == 2 and "BROKEN" in refused.stderr
    finally:
        service.close()
    assert "PRIVATE+KEY" not in service.stdout + service.stderr


async def _rows(connection) -> tuple:
    subtrees = await connection.fetch("SELECT level, index, hash FROM merkle_subtrees ORDER BY level, index")
    return subtrees, await connection.fetchrow(
        "SELECT tree_size, last_position, frontier FROM merkle_tree_state"
    )


async def test_a_tree_writer_killed_mid_build_resumes_to_the_tree_a_rebuild_gives(database_url, tmp_path):
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'test-stream', 'acct_t', 'TestRecorded', '{}', sha256(n::text::bytea)
               FROM generate_series(1, 600000) AS n"""
        )
        await admin.execute("SELECT nextval('events_position_seq') FROM generate_series(1, 3)")
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'test-stream', 'acct_t', 'TestRecorded', '{}', sha256(n::text::bytea)
               FROM generate_series(1, 1000) AS n"""
        )
        service = Service(database_url, free_port(), tmp_path / "killed")
        try:
            size = lambda: admin.fetchval("SELECT tree_size FROM merkle_tree_state")  # noqa: E731
            await wait_until(lambda: size_between(size, 1, 550_000), within=60, interval=0.005)
            service.process.kill()
            service.process.wait(10)
        finally:
            service.close()
        killed_at = await size()
        assert 0 < killed_at < 601_000
        restarted = Service(database_url, free_port(), tmp_path / "restarted")
        try:
            await wait_until(lambda: size_between(size, 601_000, 601_000), within=120)
        finally:
            restarted.close()
        resumed = await _rows(admin)
        await admin.execute("TRUNCATE merkle_subtrees, log_gaps")
        await admin.execute("UPDATE merkle_tree_state SET tree_size = 0, last_position = 0, frontier = '{}'")
        service_connection = await db.connect(database_url)
        try:
            while True:
                async with service_connection.transaction():
                    if await tree.build(service_connection, 100_000) < 100_000:
                        break
        finally:
            await service_connection.close()
        assert await _rows(admin) == resumed
        # positions 600,001-600,003 skipped: one run, before leaf 600,000 (position 600,004)
        assert [tuple(row) for row in await admin.fetch("SELECT leaf, skipped FROM log_gaps")] == [
            (600_000, 3)
        ]
    finally:
        await admin.close()


async def size_between(size, low: int, high: int) -> bool:
    return low <= await size() <= high


@pytest.mark.skipif(not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir(), reason="needs Go's x/mod")
async def test_go_checks_the_proofs_a_running_service_serves(database_url, tmp_path):
    binary = tmp_path / "verifier"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(tmp_path / "cache")}
    await asyncio.to_thread(
        subprocess.run, ["go", "build", "-o", str(binary), str(SOURCE)], check=True, env=env, timeout=300
    )
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'test-stream', 'acct_t', 'TestRecorded', '{}', sha256(n::text::bytea) FROM generate_series(1, 30) AS n"""
        )
        await admin.execute("SELECT nextval('events_position_seq')")
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               SELECT 'test-stream', 'acct_t', 'TestRecorded', '{}', sha256(n::text::bytea) FROM generate_series(31, 45) AS n"""
        )
        chain = [row[0].hex() for row in await admin.fetch("SELECT hash FROM events ORDER BY position")]
    finally:
        await admin.close()
    service = Service(database_url, free_port(), tmp_path / "go", KEYLEDGER_CHECKPOINT_INTERVAL="0")
    try:
        await service.ready()
        await wait_until(lambda: b"\n45\n" in audit_get(service.base_url, "checkpoint").content, within=20)
        signed = audit_get(service.base_url, "checkpoint").text
        verifier = CHECKPOINT_SIGNER.verifier.text()
        inclusion, consistency = [], []
        for n in range(1, 46):
            for i in range(n):
                proof = audit_get(service.base_url, f"proof/inclusion?leaf_index={i}&tree_size={n}").json()
                inclusion.append(
                    {"index": i, "size": n, "leaf_hash": proof["leaf_hash"], "hashes": proof["hashes"]}
                )
            for m in range(1, n + 1):
                proof = audit_get(service.base_url, f"proof/consistency?first={m}&second={n}").json()
                consistency.append({"first": m, "second": n, "hashes": proof["hashes"]})
    finally:
        service.close()
    text = signed.rpartition("\n\n")[0] + "\n"
    root = text.splitlines()[2]
    case = {"verifier": verifier, "signer": "", "text": text, "signed": signed, "chain_hashes": chain,
            "roots": {"45": root}, "inclusion": inclusion, "consistency": consistency}  # fmt: skip
    result = run(binary, case)
    assert result.returncode == 0, result.stdout[:2000] + result.stderr[:2000]
    assert result.stdout == "ok\n"
    assert base64.b64decode(root) != hashlib.sha256(b"").digest()
