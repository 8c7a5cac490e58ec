"""`keyledger audit verify --key K --checkpoint C FILE` checks the inclusion of an export's events
(SPEC, "Verifiable history"): a filtered export's lines are each proven with the inclusion proof the
service serves for their `leaf_index`, so a changed line, a forged one with a recomputed hash and one
with a wrong `leaf_index` are BROKEN at their position; lines newer than the checkpoint are counted,
not broken; a full export is still checked offline, by the root of its first N events."""

import json

import pytest

from events import chain
from service.cli import inclusion
from service.http.appkeys import SIGNER
from tests.helpers import SERVICE_TOKEN, create_key, expect, revoke, service_headers
from tests.integration.test_audit import keyledger, write
from tests.integration.test_checkpoint_tamper import kept_checkpoint
from tests.integration.test_checkpoints import tree_covers_log

ACCOUNT = "acct_incl"


@pytest.fixture
async def signed(client, admin, tmp_path):
    """A log of two accounts with a gap in its positions (leaf ≠ position - 1 after it), all in the
    tree, and the file of its signed checkpoint."""
    first = await create_key(client, ACCOUNT, "first")
    await create_key(client, "acct_else")
    await admin.execute("SELECT nextval('events_position_seq')")  # as an append that rolled back
    await create_key(client, "acct_else", "after the gap")
    await create_key(client, ACCOUNT, "second")
    await revoke(client, ACCOUNT, first["id"])
    await create_key(client, "acct_else", "last")
    await tree_covers_log(admin)
    path = tmp_path / "checkpoint.txt"
    await kept_checkpoint(client, path)
    return path


async def exported(monkeypatch, database_url, path, *filters: str) -> list[dict]:
    assert await keyledger(monkeypatch, database_url, "export", *filters, "-o", str(path)) == 0
    return [json.loads(line) for line in path.read_text().splitlines()]


async def verdict(client, monkeypatch, database_url, capsys, checkpoint, file, url=True) -> tuple[int, str]:
    monkeypatch.setenv("KEYLEDGER_AUDIT_TOKEN", SERVICE_TOKEN)
    key = client.server.app[SIGNER].verifier.text()
    where = ["--url", str(client.make_url("")).rstrip("/")] if url else []
    capsys.readouterr()
    argv = ("audit", "verify", str(file), "--key", key, "--checkpoint", str(checkpoint), *where)
    code = await keyledger(monkeypatch, database_url, *argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_a_filtered_export_verifies_against_a_checkpoint_with_proofs(
    client, admin, signed, tmp_path, monkeypatch, database_url, capsys
):
    path = tmp_path / "account.ndjson"
    records = await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    positions = [row[0] for row in await admin.fetch("SELECT position FROM events ORDER BY position")]
    assert [record["leaf_index"] for record in records] == [positions.index(r["position"]) for r in records]
    assert records[-1]["leaf_index"] != records[-1]["position"] - 1  # the gap lies before it
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path)
    assert (
        code == 0
        and f"OK: 3 of the export's 3 events are in the checkpoint's tree of {len(positions)}" in said
    )
    assert "BROKEN" not in said and "not covered" not in said, said
    # The audit API's page of the account is the same records, and verifies the same way.
    page = await expect(
        await client.get(f"/api/v1/audit/events?account_id={ACCOUNT}", headers=service_headers())
    )
    assert page["data"] == records
    write(path, page["data"])
    assert (await verdict(client, monkeypatch, database_url, capsys, signed, path))[0] == 0


def changed_data(records):
    records[1]["data"]["name"] = "tampered"  # the hash is left as it was
    return "does not match its hash"


def forged(records):
    records[1]["data"]["name"] = "forged"  # and the hash recomputed: only the proof can tell
    records[1]["hash"] = chain.link(bytes.fromhex(records[1]["prev_hash"]), records[1]).hex()
    return "inclusion proof fails"


def wrong_leaf_index(records):
    records[1]["leaf_index"] = records[0]["leaf_index"]  # a real leaf, but not this event's
    return "inclusion proof fails"


def hash_removed(records):
    records[1]["hash"] = None  # posing as an event from before the chain, whose content is not hashed
    return "inclusion proof fails"


def no_leaf_index(records):
    records[1]["leaf_index"] = "3"
    return "is no leaf index"


@pytest.mark.parametrize("tamper", [changed_data, forged, wrong_leaf_index, hash_removed, no_leaf_index])
async def test_a_tampered_line_of_a_filtered_export_is_broken_at_its_position(
    client, signed, tmp_path, monkeypatch, database_url, capsys, tamper
):
    path = tmp_path / "account.ndjson"
    records = await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    why = tamper(records)
    write(path, records)
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path)
    broken = [line for line in said.splitlines() if line.startswith("BROKEN")]
    assert code == 1 and len(broken) == 1, said
    assert broken[0].startswith(f"BROKEN: position {records[1]['position']}: ") and why in broken[0], said
    assert "OK: 2 of the export's 3 events are in the checkpoint's tree" in said


async def test_events_newer_than_the_checkpoint_are_counted_not_broken(
    client, admin, signed, tmp_path, monkeypatch, database_url, capsys
):
    await create_key(client, ACCOUNT, "after the checkpoint")
    await tree_covers_log(admin)
    # and one the tree writer has not reached: it is held off while the event commits
    async with admin.transaction():
        await admin.execute("SELECT * FROM merkle_tree_state FOR UPDATE")
        await create_key(client, ACCOUNT, "not in the tree yet")
        path = tmp_path / "account.ndjson"
        records = await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    size = int(signed.read_text().splitlines()[1])
    assert [record["leaf_index"] is None for record in records] == [False] * 4 + [True]
    assert records[3]["leaf_index"] >= size
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path)
    assert code == 0 and "BROKEN" not in said, said
    assert "OK: 3 of the export's 5 events are in the checkpoint's tree" in said
    assert f"OK: 2 events are not covered by the checkpoint of {size}" in said


async def test_a_filtered_export_without_url_is_refused_with_what_to_do(
    client, signed, tmp_path, monkeypatch, database_url, capsys
):
    path = tmp_path / "account.ndjson"
    await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path, url=False)
    refusal = said.splitlines()[-1]
    assert code == 2 and refusal.startswith("keyledger audit verify: ") and "BROKEN" not in said, said
    assert (
        "is not the log's first" in refusal and "give --url" in refusal and "KEYLEDGER_AUDIT_TOKEN" in refusal
    )


async def test_a_filtered_export_from_before_leaf_indexes_is_told_to_be_exported_again(
    client, signed, tmp_path, monkeypatch, database_url, capsys
):
    path = tmp_path / "account.ndjson"
    records = await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    write(path, [{k: v for k, v in record.items() if k != "leaf_index"} for record in records])
    for url in (False, True):  # nothing to prove with: refused, with or without --url
        code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path, url=url)
        refusal = said.splitlines()[-1]
        verdicts = [line for line in said.splitlines() if line.startswith(("OK", "BROKEN"))]
        assert code == 2 and verdicts == [verdicts[0]] and "checkpoint of" in verdicts[0], said
        assert "names no event's leaf_index" in refusal and "Export it again" in refusal, refusal


async def test_a_full_export_still_verifies_offline(
    client, admin, signed, tmp_path, monkeypatch, database_url, capsys
):
    await create_key(client, ACCOUNT, "after the checkpoint")
    await tree_covers_log(admin)
    path = tmp_path / "log.ndjson"
    records = await exported(monkeypatch, database_url, path)
    size = int(signed.read_text().splitlines()[1])
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path, url=False)
    assert code == 0 and f"OK: the export's first {size} events are the checkpoint's tree" in said, said
    assert f"OK: {len(records) - size} later events are newer than the checkpoint" in said
    # An export from before leaf_index existed (no such field) is the same prefix.
    write(path, [{k: v for k, v in record.items() if k != "leaf_index"} for record in records])
    assert (await verdict(client, monkeypatch, database_url, capsys, signed, path, url=False))[0] == 0
    # A changed line keeps its hash, hence the root: its own hash betrays it.
    records[2]["data"]["name"] = "tampered"
    write(path, records)
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path, url=False)
    assert code == 1 and f"BROKEN: position {records[2]['position']}: " in said, said
    # A forged one with its hash recomputed changes the root.
    records[2]["hash"] = chain.link(bytes.fromhex(records[2]["prev_hash"]), records[2]).hex()
    write(path, records)
    code, said = await verdict(client, monkeypatch, database_url, capsys, signed, path, url=False)
    assert code == 1 and "are not the ones the checkpoint signs" in said, said


async def test_progress_goes_to_stderr_and_the_verdict_to_stdout(
    client, signed, tmp_path, monkeypatch, database_url, capsys
):
    monkeypatch.setattr(inclusion, "PROGRESS_EVERY", 2)
    path = tmp_path / "account.ndjson"
    await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    monkeypatch.setenv("KEYLEDGER_AUDIT_TOKEN", SERVICE_TOKEN)
    key, url = client.server.app[SIGNER].verifier.text(), str(client.make_url("")).rstrip("/")
    capsys.readouterr()
    argv = ("audit", "verify", str(path), "--key", key, "--checkpoint", str(signed), "--url", url)
    assert await keyledger(monkeypatch, database_url, *argv) == 0
    captured = capsys.readouterr()
    assert captured.err == "keyledger audit verify: 2 of 3 lines checked\n"
    assert all(line.startswith("OK: ") for line in captured.out.splitlines()), captured.out


async def test_an_event_from_before_the_chain_is_proven_in_its_place(
    client, admin, tmp_path, monkeypatch, database_url, capsys
):
    await create_key(client, ACCOUNT, "chained")
    await admin.execute(  # as migration 004 left the events recorded before it: no hash
        "INSERT INTO events (stream_id, account_id, type, data) VALUES ('test', $1, 'TestRecorded', '{}')",
        ACCOUNT,
    )
    await create_key(client, "acct_else")
    await tree_covers_log(admin)
    checkpoint = tmp_path / "checkpoint.txt"
    await kept_checkpoint(client, checkpoint)
    path = tmp_path / "account.ndjson"
    records = await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    assert [record["hash"] is None for record in records] == [False, True]
    records.reverse()  # no longer the log's first events: proven line by line
    write(path, records)
    code, said = await verdict(client, monkeypatch, database_url, capsys, checkpoint, path)
    assert code == 0 and "OK: 2 of the export's 2 events are in the checkpoint's tree of 3" in said, said
    assert "OK: 1 of them carry no hash" in said


async def test_the_service_s_refusal_is_named(client, signed, tmp_path, monkeypatch, database_url, capsys):
    path = tmp_path / "account.ndjson"
    await exported(monkeypatch, database_url, path, "--account", ACCOUNT)
    monkeypatch.setenv("KEYLEDGER_AUDIT_TOKEN", "not-the-token")
    key, url = client.server.app[SIGNER].verifier.text(), str(client.make_url("")).rstrip("/")
    capsys.readouterr()
    argv = ("audit", "verify", str(path), "--key", key, "--checkpoint", str(signed), "--url", url)
    assert await keyledger(monkeypatch, database_url, *argv) == 2
    refusal = capsys.readouterr().err.strip()
    assert (
        refusal.startswith("keyledger audit verify: ")
        and "/api/v1/audit/proof/inclusion answered 401" in refusal
    )
    assert "not-the-token" not in refusal
