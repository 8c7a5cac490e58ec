"""`keyledger audit verify --key K --history FILE` checks a saved key history with proofs offline
(SPEC, "Verifiable history"): the carried checkpoint's signature with K, each event's hash at its
leaf with its audit path; a changed hash, leaf index, proof or checkpoint is BROKEN (exit 1)."""

import json

import pytest

from events.note import Signer
from service.http.appkeys import SIGNER
from tests.helpers import auth, create_key, expect, revoke
from tests.integration.test_audit import keyledger

ACCOUNT = "acct_hist"


@pytest.fixture
async def saved(client, tmp_path):
    """A key's history with proofs, as the account user saved it: (the answer, its file)."""
    key = await create_key(client, ACCOUNT)
    await create_key(client, "acct_else")
    await revoke(client, ACCOUNT, key["id"])
    path = f"/api/v1/accounts/user/api-keys/{key['id']}/events/?proof=true"
    answer = await expect(await client.get(path, headers=auth(ACCOUNT)))
    file = tmp_path / "history.json"
    file.write_text(json.dumps(answer))
    return answer, file


async def verdict(client, monkeypatch, database_url, capsys, file, key=None) -> tuple[int, str]:
    key = key or client.server.app[SIGNER].verifier.text()
    capsys.readouterr()
    code = await keyledger(monkeypatch, database_url, "audit", "verify", "--key", key, "--history", str(file))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_a_saved_history_verifies_offline(client, saved, monkeypatch, database_url, capsys):
    _, file = saved
    code, said = await verdict(client, monkeypatch, database_url, capsys, file)
    assert code == 0 and "OK: 2 of the history's 2 events are in the checkpoint's tree" in said, said
    assert "signed by keyledger.local/log" in said and "BROKEN" not in said


def changed_hash(answer):
    answer["data"][1]["hash"] = answer["data"][0]["hash"]
    return "position"


def changed_leaf_index(answer):
    answer["data"][1]["leaf_index"] -= 1
    return "position"


def changed_proof(answer):
    proof = answer["data"][1]["inclusion_proof"]
    proof["hashes"] = proof["hashes"][:-1] if proof["hashes"] else ["AAAA"]
    return "position"


def changed_checkpoint(answer):
    lines = answer["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)  # the size the signature covers
    answer["checkpoint"] = "\n".join(lines)
    return "the history's checkpoint"


@pytest.mark.parametrize("tamper", [changed_hash, changed_leaf_index, changed_proof, changed_checkpoint])
async def test_a_changed_history_is_broken(client, saved, monkeypatch, database_url, capsys, tamper):
    answer, file = saved
    named = tamper(answer)
    file.write_text(json.dumps(answer))
    code, said = await verdict(client, monkeypatch, database_url, capsys, file)
    broken = [line for line in said.splitlines() if line.startswith("BROKEN")]
    assert code == 1 and len(broken) == 1 and broken[0].startswith(f"BROKEN: {named}"), said
    if named == "position":
        assert broken[0].startswith(f"BROKEN: position {answer['data'][1]['position']}: "), said


async def test_another_key_and_a_history_without_proofs_are_refused(
    client, saved, tmp_path, monkeypatch, database_url, capsys
):
    _, file = saved
    other = Signer.generate("keyledger.local/log").verifier.text()
    code, said = await verdict(client, monkeypatch, database_url, capsys, file, key=other)
    assert code == 1 and said.splitlines()[-1].startswith("BROKEN: the history's checkpoint: "), said
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"data": []}))
    code, said = await verdict(client, monkeypatch, database_url, capsys, plain)
    assert code == 2 and said.startswith("keyledger audit verify: ") and "?proof=true" in said, said


async def test_history_takes_no_checkpoint_or_export(client, saved, monkeypatch, database_url, capsys):
    _, file = saved
    key = client.server.app[SIGNER].verifier.text()
    for extra in (["--checkpoint", "latest"], [str(file)]):
        capsys.readouterr()
        argv = ["audit", "verify", "--key", key, "--history", str(file), *extra]
        assert await keyledger(monkeypatch, database_url, *argv) == 2
        assert "--history takes only --key" in capsys.readouterr().err
