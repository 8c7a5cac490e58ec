"""`keyledger audit verify --key K --history FILE`: a key's history proven offline (SPEC, "Verifiable
history").

FILE is a saved answer of `GET /api/v1/accounts/user/api-keys/{key_id}/events/?proof=true`: it
carries one signed checkpoint, and each event its `leaf_index`, its chain `hash` and its audit path
in that checkpoint's tree. The checkpoint's signature is checked with K, and each event's hash with
its path against the signed root: nothing is fetched. What this proves is that each hash is the
leaf `leaf_index` of the signed log; the answer shows only the key's public fields, so the fields it
shows are tied to that hash only by an auditor's export of the same position (docs/audit.md).
"""

import binascii
from pathlib import Path

import msgspec

from events import merkle
from events.note import Checkpoint, NoteError, Verifier, open_note
from service.cli.inclusion import proof_hashes


class _Proof(msgspec.Struct):
    tree_size: int
    hashes: list[str]


class _Event(msgspec.Struct):
    position: int
    leaf_index: int
    hash: str
    inclusion_proof: _Proof


class _History(msgspec.Struct):
    data: list[_Event]
    checkpoint: str


def _read(file: str) -> _History:
    try:
        return msgspec.json.decode(Path(file).read_bytes(), type=_History)
    except OSError as error:
        raise SystemExit(f"keyledger audit verify: cannot read the history {file}: {error}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise SystemExit(
            f"keyledger audit verify: {file} is no key history with proofs ({error}): save the answer of "
            "GET /api/v1/accounts/user/api-keys/{key_id}/events/?proof=true"
        ) from None


def _problem(event: _Event, signed: Checkpoint) -> str | None:
    where = f"position {event.position}"
    if event.inclusion_proof.tree_size != signed.size:
        return (
            f"{where}: its proof is against a tree of {event.inclusion_proof.tree_size}, not the checkpoint's"
        )
    try:
        leaf = merkle.leaf_hash(bytes.fromhex(event.hash))
        path = proof_hashes(event.inclusion_proof.hashes)
    except (ValueError, binascii.Error) as error:
        return f"{where}: its hash or proof is not hex and base64 ({error})"
    if not 0 <= event.leaf_index < signed.size or not merkle.verify_inclusion(
        leaf, event.leaf_index, signed.size, path, signed.root
    ):
        return (
            f"{where}: is not leaf {event.leaf_index} of the checkpoint's tree of {signed.size} events "
            "(its inclusion proof fails: its hash, leaf_index or proof was changed)"
        )
    return None


def check(file: str, verifier: Verifier) -> int:
    """Print the verdict lines; 0 when every event is proven, 1 when something does not hold."""
    history = _read(file)
    try:
        signed = Checkpoint.parse(open_note(history.checkpoint, verifier))
    except NoteError as error:
        print(f"BROKEN: the history's checkpoint: {error}")
        return 1
    print(f"OK: checkpoint of {signed.size} events signed by {verifier.name} ({signed.origin})")
    broken = [problem for event in history.data if (problem := _problem(event, signed))]
    proven = len(history.data) - len(broken)
    print(f"OK: {proven} of the history's {len(history.data)} events are in the checkpoint's tree")
    for problem in broken:
        print(f"BROKEN: {problem}")
    return 1 if broken else 0
