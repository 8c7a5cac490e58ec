"""Auditors: export the log, publish its head digest, and find any tampering at the right position."""

import asyncio
import json

import pytest

from events import chain
from service import cli
from tests.helpers import (
    KEYS,
    SERVICE_TOKEN,
    activate,
    auth,
    create_key,
    expect,
    expect_error,
    revoke,
    send_usage,
    token_for,
    usage_event,
)
from tests.integration.test_checkpoints import tree_covers_log

ACCOUNT = "acct_audit"


@pytest.fixture
async def history(client):
    """A log with every kind of event: keys, a rename, a revocation, subscriptions, usage."""
    await activate(client, ACCOUNT)
    first = await create_key(client, ACCOUNT, "first")
    second = await create_key(client, ACCOUNT, "second")
    await client.patch(f"{KEYS}/{first['id']}/update/", json={"name": "renamed"}, headers=auth(ACCOUNT))
    await expect(await send_usage(client, [usage_event(first["id"], f"req-{n}") for n in range(5)]), 202)
    await revoke(client, ACCOUNT, second["id"])
    await create_key(client, "acct_other")


async def keyledger(monkeypatch, database_url, *argv: str) -> int:
    """Run the `keyledger` command on this test's database (in a thread: it runs its own event loop)."""
    monkeypatch.setenv("KEYLEDGER_DATABASE_URL", database_url)
    return await asyncio.to_thread(cli.main, list(argv))


@pytest.fixture
async def export(history, admin, tmp_path, monkeypatch, database_url, capsys):
    """The untouched export as a list of records, the file it came from, and the published digest."""
    await tree_covers_log(admin)  # so every leaf_index is known, in the file as in the API's pages
    path = tmp_path / "log.ndjson"
    assert await keyledger(monkeypatch, database_url, "export", "-o", str(path)) == 0
    capsys.readouterr()
    assert await keyledger(monkeypatch, database_url, "audit", "digest") == 0
    digest_path = tmp_path / "digest.json"
    digest_path.write_text(capsys.readouterr().out)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 11  # 1 subscription, 3 creates, 1 rename, 5 usage, 1 revocation
    return records, path, digest_path


async def verdict(monkeypatch, database_url, capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await keyledger(monkeypatch, database_url, "audit", "verify", *argv)
    return code, capsys.readouterr().out.strip()


def write(path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def forge(after: dict, **fields) -> dict:
    """An event a forger who knows the algorithm would write right after `after`."""
    forged = {**after, "position": after["position"] + 1, "prev_hash": after["hash"], **fields}
    forged["hash"] = chain.link(bytes.fromhex(after["hash"]), forged).hex()
    return forged


def rechain(records: list[dict]) -> list[dict]:
    """Recompute every hash, as a forger who rewrites the whole file would."""
    previous = bytes.fromhex(records[0]["prev_hash"])
    for record in records:
        record["prev_hash"] = previous.hex()
        previous = chain.link(previous, record)
        record["hash"] = previous.hex()
    return records


async def test_the_untouched_export_verifies_clean_also_against_the_digest(
    export, monkeypatch, database_url, capsys
):
    records, path, digest_path = export
    assert json.loads(digest_path.read_text()) == {
        "position": records[-1]["position"],
        "hash": records[-1]["hash"],
    }
    code, said = await verdict(monkeypatch, database_url, capsys, str(path), "--digest", str(digest_path))
    assert (code, said) == (
        0,
        f"OK: {len(records)} events verified, up to position {records[-1]['position']}",
    )
    assert "key_digest" in json.dumps(records)  # the auditor sees exactly what the log holds


def changed_field(records):
    records[5]["data"]["name" if "name" in records[5]["data"] else "key_id"] = "tampered"
    return records, records[5]["position"]


def deleted(records):
    position = records[6]["position"]
    del records[5]
    return records, position


def inserted_forgery(records):
    # Any label will do: the chain, not the position number, betrays it.
    forged = forge(records[4], position=999_999, data={**records[4]["data"], "key_id": "key_forged"})
    return [*records[:5], forged, *records[5:]], forged["position"]


def inserted_clumsy_forgery(records):
    forged = {**records[4], "data": {"forged": True}}
    return [*records[:5], forged, *records[5:]], forged["position"]


def swapped(records):
    records[5], records[6] = records[6], records[5]
    return records, records[5]["position"]


def rewritten_consistently(records):
    records[3]["metadata"]["actor"] = "someone else"
    return rechain(records), records[-1]["position"]  # only the digest can tell


@pytest.mark.parametrize(
    "tamper",
    [changed_field, deleted, inserted_forgery, inserted_clumsy_forgery, swapped, rewritten_consistently],
)
async def test_tampering_with_an_export_is_found_at_the_right_position(
    export, tamper, monkeypatch, database_url, capsys
):
    records, path, digest_path = export
    tampered, position = tamper([dict(record) for record in records])
    write(path, tampered)
    code, said = await verdict(monkeypatch, database_url, capsys, str(path), "--digest", str(digest_path))
    assert code == 1
    assert said.startswith(f"BROKEN at position {position}:"), said


async def test_dropping_the_last_event_is_found_against_the_digest(export, monkeypatch, database_url, capsys):
    records, path, digest_path = export
    write(path, records[:-1])
    assert (await verdict(monkeypatch, database_url, capsys, str(path)))[0] == 0  # a prefix is a valid chain
    code, said = await verdict(monkeypatch, database_url, capsys, str(path), "--digest", str(digest_path))
    assert code == 1
    assert said.startswith(f"BROKEN at position {records[-1]['position']}:") and "missing" in said


async def test_a_superuser_who_edits_a_row_behind_the_trigger_is_found(
    export, admin, monkeypatch, database_url, capsys
):
    records, _, digest_path = export
    assert await verdict(monkeypatch, database_url, capsys, "--db", "--digest", str(digest_path)) == (
        0,
        f"OK: {len(records)} events verified, up to position {records[-1]['position']}",
    )
    target = records[7]["position"]
    await admin.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
    await admin.execute(
        # A typed usage row (migration 008) holds key_id in a column, any other event in its JSON.
        """UPDATE events SET data = jsonb_set(data, '{key_id}', '"key_other"'),
                              key_id = CASE WHEN key_id IS NOT NULL THEN 'key_other' END
           WHERE position = $1""",
        target,
    )
    await admin.execute("ALTER TABLE events ENABLE TRIGGER events_no_update")
    code, said = await verdict(monkeypatch, database_url, capsys, "--db", "--digest", str(digest_path))
    assert code == 1 and said.startswith(f"BROKEN at position {target}:"), said


async def test_filtered_exports_carry_verifiable_events(history, tmp_path, monkeypatch, database_url, capsys):
    path = tmp_path / "account.ndjson"
    assert (
        await keyledger(monkeypatch, database_url, "export", "--account", "acct_other", "-o", str(path)) == 0
    )
    [record] = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["account_id"] == "acct_other" and record["type"] == "ApiKeyCreated"
    assert chain.link(bytes.fromhex(record["prev_hash"]), record).hex() == record["hash"]
    after = tmp_path / "after.ndjson"
    assert (
        await keyledger(
            monkeypatch, database_url, "export", "--after", str(record["position"] - 1), "-o", str(after)
        )
        == 0
    )
    assert json.loads(after.read_text().splitlines()[0]) == record


async def test_the_audit_api_pages_the_same_log(export, client):
    records, _, _ = export
    paged, after = [], 0
    while True:
        page = await expect(
            await client.get(
                f"/api/v1/audit/events?after={after}&limit=4",
                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            )
        )
        if not page["data"]:
            break
        paged += page["data"]
        after = page["next_after"]
    assert paged == records
    assert [record["leaf_index"] for record in records] == list(range(len(records)))  # no gap in this log
    auditor = {"Authorization": f"Bearer {token_for('acct_x', roles=['auditor'])}"}
    assert (await expect(await client.get("/api/v1/audit/events?limit=1", headers=auditor)))[
        "data"
    ] == records[:1]


@pytest.mark.parametrize(
    ("query", "headers", "status", "type_"),
    [
        ("", "none", 401, "authentication_required"),
        ("", "user", 403, "forbidden"),
        ("?limit=0", "service", 400, "invalid_request"),
        ("?limit=10001", "service", 400, "invalid_request"),
        ("?after=-1", "service", 400, "invalid_request"),
    ],
)
async def test_the_audit_api_refuses(client, query, headers, status, type_):
    sent = {"none": {}, "service": {"Authorization": f"Bearer {SERVICE_TOKEN}"}, "user": auth("acct_x")}[
        headers
    ]
    await expect_error(await client.get(f"/api/v1/audit/events{query}", headers=sent), status, type_)


async def test_verify_explains_what_it_cannot_read(tmp_path, monkeypatch, database_url, capsys):
    (tmp_path / "junk.ndjson").write_text("not json\n")
    for name, why in (
        ("junk.ndjson", "junk.ndjson is not an NDJSON export"),
        ("missing.ndjson", "cannot read"),
    ):
        capsys.readouterr()
        assert await keyledger(monkeypatch, database_url, "audit", "verify", str(tmp_path / name)) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("keyledger audit verify: ") and why in line, line
