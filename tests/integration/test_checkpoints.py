"""Signed checkpoints and RFC 9162 proofs over HTTP (SPEC, "Verifiable history"): what the endpoints
answer verifies with events/merkle.py's RFC algorithms and the configured verifier key, for every
leaf and every pair of sizes of a small real log with a gap in its positions; the errors are the
SPEC's; an account user proves its own key's history against one signed checkpoint."""

import base64
import hashlib
import random

import pytest

from events import merkle
from events.note import Checkpoint, open_note
from service.http.appkeys import SIGNER
from tests.helpers import (
    CHECKPOINT_KEY,
    CHECKPOINT_SIGNER,
    auth,
    create_key,
    expect,
    expect_error,
    revoke,
    service_headers,
    token_for,
    wait_until,
)

AUDIT = "/api/v1/audit"


async def add_events(admin, count: int, gap_at: int | None = None) -> None:
    """In one transaction: the tree writer sees the log before or after, never a size between."""
    async with admin.transaction():
        await _add_events(admin, count, gap_at)


async def _add_events(admin, count: int, gap_at: int | None) -> None:
    for n in range(count):
        if n == gap_at:  # a position drawn by an append that rolled back
            await admin.execute("SELECT nextval('events_position_seq')")
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               VALUES ('test-stream', 'acct_t', 'TestRecorded', '{}', $1)""",
            random.randbytes(32),
        )


async def tree_covers_log(admin) -> None:
    query = """SELECT (SELECT last_position FROM merkle_tree_state) >= coalesce((SELECT max(position) FROM events), 0)
                  AND (SELECT max(tree_size) FROM checkpoints) = (SELECT tree_size FROM merkle_tree_state)"""
    await wait_until(lambda: admin.fetchval(query), within=10)


async def leaves_of_log(client) -> list[bytes]:
    page = await expect(await client.get(f"{AUDIT}/events?limit=10000", headers=service_headers()))
    return [merkle.leaf_hash(bytes.fromhex(event["hash"])) for event in page["data"]]


async def checkpoint(client, **query) -> Checkpoint:
    response = await client.get(f"{AUDIT}/checkpoint", params=query, headers=service_headers())
    assert response.status == 200 and response.content_type == "text/plain"
    return Checkpoint.parse(open_note(await response.text(), client.server.app[SIGNER].verifier))


def unb64(texts: list[str]) -> list[bytes]:
    return [base64.b64decode(text) for text in texts]


async def test_an_empty_log_has_a_signed_checkpoint_of_size_0(client, admin):
    await tree_covers_log(admin)
    empty = await checkpoint(client)
    assert (empty.origin, empty.size, empty.root) == ("keyledger.local/log", 0, hashlib.sha256(b"").digest())
    assert await checkpoint(client, tree_size="0") == empty


async def test_every_proof_verifies_for_every_leaf_and_pair_of_sizes(client, admin):
    await tree_covers_log(admin)
    await add_events(admin, 33, gap_at=20)
    await tree_covers_log(admin)
    leaves = await leaves_of_log(client)
    signed = await checkpoint(client)
    assert signed.size == len(leaves) == 33 and signed.root == merkle.root(leaves)
    positions = [row[0] for row in await admin.fetch("SELECT position FROM events ORDER BY position")]
    for n in range(1, len(leaves) + 1):
        root = merkle.root(leaves[:n])
        for i in range(n):
            query = {"leaf_index": str(i), "tree_size": str(n)}
            proof = await expect(
                await client.get(f"{AUDIT}/proof/inclusion", params=query, headers=service_headers())
            )
            assert (proof["leaf_index"], proof["tree_size"], proof["position"]) == (i, n, positions[i])
            assert base64.b64decode(proof["leaf_hash"]) == leaves[i]
            assert merkle.verify_inclusion(leaves[i], i, n, unb64(proof["hashes"]), root)
        for m in range(1, n + 1):
            query = {"first": str(m), "second": str(n)}
            proof = await expect(
                await client.get(f"{AUDIT}/proof/consistency", params=query, headers=service_headers())
            )
            assert (proof["first"], proof["second"]) == (m, n)
            assert merkle.verify_consistency(m, n, unb64(proof["hashes"]), merkle.root(leaves[:m]), root)


@pytest.mark.parametrize(
    ("path", "query", "status", "named"),
    [
        ("checkpoint", "tree_size=x", 400, "tree_size"),
        ("checkpoint", "tree_size=99", 400, "tree_size"),
        ("checkpoint", "tree_size=2", 404, "tree_size"),
        ("proof/inclusion", "tree_size=3", 400, "leaf_index"),
        ("proof/inclusion", "leaf_index=0", 400, "tree_size"),
        ("proof/inclusion", "leaf_index=3&tree_size=3", 400, "leaf_index"),
        ("proof/inclusion", "leaf_index=0&tree_size=4", 400, "tree_size"),
        ("proof/inclusion", "leaf_index=-1&tree_size=3", 400, "leaf_index"),
        ("proof/consistency", "second=3", 400, "first"),
        ("proof/consistency", "first=0&second=3", 400, "first"),
        ("proof/consistency", "first=3&second=2", 400, "first"),
        ("proof/consistency", "first=1&second=4", 400, "second"),
        ("proof/consistency", "first=1&second=99999999999999999999999", 400, "second"),
    ],
)
async def test_the_proof_endpoints_refuse_as_spec_says(client, admin, path, query, status, named):
    await tree_covers_log(admin)
    await add_events(admin, 3)
    await tree_covers_log(admin)
    message = await expect_error(
        await client.get(f"{AUDIT}/{path}?{query}", headers=service_headers()),
        status,
        "invalid_request" if status == 400 else "not_found",
    )
    assert named in message


@pytest.mark.parametrize(
    "path", ["checkpoint", "proof/inclusion?leaf_index=0&tree_size=1", "proof/consistency?first=1&second=1"]
)
async def test_the_proofs_need_the_service_token_or_an_auditor(client, admin, path):
    await expect_error(await client.get(f"{AUDIT}/{path}"), 401)
    await expect_error(await client.get(f"{AUDIT}/{path}", headers=auth("acct_x")), 403, "forbidden")
    auditor = {"Authorization": f"Bearer {token_for('acct_x', roles=['auditor'])}"}
    await tree_covers_log(admin)
    assert (await client.get(f"{AUDIT}/checkpoint", headers=auditor)).status == 200


async def test_an_account_user_proves_its_keys_history_against_one_signed_checkpoint(client, admin):
    key = await create_key(client, "acct_owner")
    await create_key(client, "acct_other")
    await revoke(client, "acct_owner", key["id"])
    path = f"/api/v1/accounts/user/api-keys/{key['id']}/events/"
    plain = await expect(await client.get(path, headers=auth("acct_owner")))
    assert "checkpoint" not in plain and "inclusion_proof" not in plain["data"][0]
    proven = await expect(await client.get(path + "?proof=true", headers=auth("acct_owner")))
    signed = Checkpoint.parse(open_note(proven["checkpoint"], client.server.app[SIGNER].verifier))
    assert [event["type"] for event in proven["data"]] == ["ApiKeyCreated", "ApiKeyRevoked"]
    for event in proven["data"]:
        proof = event["inclusion_proof"]
        assert proof["tree_size"] == signed.size
        leaf = merkle.leaf_hash(bytes.fromhex(event["hash"]))
        assert merkle.verify_inclusion(
            leaf, event["leaf_index"], signed.size, unb64(proof["hashes"]), signed.root
        )
    await expect_error(
        await client.get(path + "?proof=yes", headers=auth("acct_owner")), 400, "invalid_request"
    )


async def test_the_signer_key_is_in_no_table_and_no_answer(client, admin):
    key = await create_key(client, "acct_owner")
    await tree_covers_log(admin)
    history = f"/api/v1/accounts/user/api-keys/{key['id']}/events/?proof=true"
    answers = [
        await (await client.get(f"{AUDIT}/checkpoint", headers=service_headers())).text(),
        await (
            await client.get(f"{AUDIT}/proof/inclusion?leaf_index=0&tree_size=1", headers=service_headers())
        ).text(),
        await (await client.get(history, headers=auth("acct_owner"))).text(),
        await (await client.get("/openapi.json")).text(),
    ]
    tables = await admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    for row in tables:
        answers.append(
            await admin.fetchval(
                f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM public.\"{row[0]}\" t"
            )
        )
    seed = CHECKPOINT_KEY.rsplit("+", 1)[1]
    assert client.server.app[SIGNER].verifier == CHECKPOINT_SIGNER.verifier
    for text in answers:
        assert "PRIVATE+KEY" not in text and seed not in text
