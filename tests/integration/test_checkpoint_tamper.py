"""The tamper tests, against signed checkpoints: an operator who changes, removes, inserts or
reorders an event after an auditor kept a checkpoint, then rebuilds the tree and signs a new
checkpoint with its own key, cannot prove the new log extends the old one: the consistency proof the
service gives fails, and `keyledger audit verify` says BROKEN (exit 1). Untouched, it says OK."""

import asyncio
import random

import pytest

from service.cli import main
from tests.helpers import CHECKPOINT_SIGNER, SERVICE_TOKEN, service_headers, wait_until
from tests.integration.test_checkpoints import add_events, tree_covers_log

AUDIT = "/api/v1/audit"


async def changed(admin, positions):
    await admin.execute("UPDATE events SET hash = $1 WHERE position = $2", random.randbytes(32), positions[5])


async def removed(admin, positions):
    await admin.execute("DELETE FROM events WHERE position = $1", positions[5])


async def inserted(admin, positions):  # into the gap a rolled-back append left: no position moves
    await admin.execute(
        """INSERT INTO events (position, stream_id, account_id, type, data, hash) OVERRIDING SYSTEM VALUE
           VALUES ($1, 'test-stream', 'acct_t', 'TestRecorded', '{}', $2)""",
        positions[7] - 1,
        random.randbytes(32),
    )


async def reordered(admin, positions):
    a, b = positions[3], positions[4]
    hashes = dict(await admin.fetch("SELECT position, hash FROM events WHERE position IN ($1, $2)", a, b))
    await admin.execute("UPDATE events SET hash = $1 WHERE position = $2", hashes[b], a)
    await admin.execute("UPDATE events SET hash = $1 WHERE position = $2", hashes[a], b)


async def untouched(admin, positions):
    pass


async def kept_checkpoint(client, path) -> str:
    note = await (await client.get(f"{AUDIT}/checkpoint", headers=service_headers())).text()
    path.write_text(note)
    return note


async def audit_verify(client, monkeypatch, *argv) -> int:
    monkeypatch.setenv("KEYLEDGER_AUDIT_TOKEN", SERVICE_TOKEN)
    url = str(client.make_url("")).rstrip("/")
    arguments = ["audit", "verify", "--key", CHECKPOINT_SIGNER.verifier.text(), *argv, "--url", url]
    return await asyncio.to_thread(main, arguments)


@pytest.mark.parametrize("tamper", [changed, removed, inserted, reordered, untouched])
async def test_the_consistency_proof_after_a_tampered_rebuild_fails(
    client, admin, tmp_path, monkeypatch, capsys, tamper
):
    await tree_covers_log(admin)
    await add_events(admin, 20, gap_at=7)
    await tree_covers_log(admin)
    before = tmp_path / "before.txt"
    await kept_checkpoint(client, before)
    positions = [row[0] for row in await admin.fetch("SELECT position FROM events ORDER BY position")]
    await admin.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await tamper(admin, positions)
    await admin.execute("ALTER TABLE events ENABLE TRIGGER USER")
    await add_events(admin, 5)
    # The operator rebuilds the tree from its rewritten log and signs anew (it holds the key).
    async with admin.transaction():
        await admin.execute("LOCK merkle_tree_state")
        await admin.execute("TRUNCATE merkle_subtrees, log_gaps, checkpoints")
        await admin.execute("UPDATE merkle_tree_state SET tree_size = 0, last_position = 0, frontier = '{}'")
    await tree_covers_log(admin)
    size = await admin.fetchval("SELECT tree_size FROM merkle_tree_state")
    await wait_until(lambda: admin.fetchval("SELECT max(tree_size) = $1 FROM checkpoints", size), within=10)
    after = tmp_path / "after.txt"
    await kept_checkpoint(client, after)
    capsys.readouterr()
    code = await audit_verify(client, monkeypatch, "--checkpoint", str(before), "--checkpoint", str(after))
    out = capsys.readouterr().out
    if tamper is untouched:
        assert code == 0 and "extends the log of 20 events" in out, out
    else:
        assert code == 1 and "BROKEN" in out and "does not extend" in out, out
