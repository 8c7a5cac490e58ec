"""Verifiable history: the signed checkpoints of the log's Merkle tree and its RFC 9162 proofs.

`GET /api/v1/audit/checkpoint`, `/proof/inclusion` and `/proof/consistency`, with the audit log's
credentials (the service token or an auditor's JWT); the account user's proofs of its own keys'
history ride on the history endpoint (routes/keys.py, `?proof=true`), built by `history_proofs`.
"""

import base64
from typing import Annotated

import msgspec
from aiohttp import web

from service.app import checkpoints
from service.http import params
from service.http.appkeys import POOL, SETTINGS, SIGNER
from service.http.errors import ApiError
from service.http.responses import json_response
from service.http.routes.audit import require_auditor
from service.store import tree

routes = web.RouteTableDef()
LARGEST = 2**63 - 1
Base64 = Annotated[str, msgspec.Meta(description="base64 (standard, padded) of a SHA-256 hash")]


class InclusionProof(msgspec.Struct):
    leaf_index: int
    tree_size: int
    leaf_hash: Base64
    position: Annotated[int, msgspec.Meta(description="the event's position in the log")]
    hashes: Annotated[list[Base64], msgspec.Meta(description="RFC 9162 §2.1.3 audit path, leaf first")]


class ConsistencyProof(msgspec.Struct):
    first: int
    second: int
    hashes: Annotated[list[Base64], msgspec.Meta(description="RFC 9162 §2.1.4 consistency proof")]


class EventInclusion(msgspec.Struct):
    tree_size: int
    hashes: list[Base64]


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _required(request: web.Request, name: str) -> int:
    if name not in request.query:
        raise ApiError(400, "invalid_request", f"{name} is required: a whole number from 0 to {LARGEST}.")
    return params.whole_number(request, name, 0, 0, LARGEST)


async def _within_log(connection, name: str, size: int) -> None:
    if not await checkpoints.log_reaches(connection, size):
        raise ApiError(400, "invalid_request", f"{name} {size} is beyond the log: it holds fewer events.")


@routes.get("/api/v1/audit/checkpoint")
async def checkpoint(request: web.Request) -> web.Response:
    require_auditor(request)
    size = _required(request, "tree_size") if "tree_size" in request.query else None
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as connection:
        if size is None:
            _, note = await checkpoints.covering_checkpoint(
                connection, request.app[SIGNER], settings.log_origin, 0
            )
        else:
            await _within_log(connection, "tree_size", size)
            kept = await tree.checkpoint(connection, size)
            if kept is None:
                raise ApiError(404, "not_found", f"No checkpoint of tree_size {size} was made.")
            note = kept["note"]
    return web.Response(text=note, content_type="text/plain")


@routes.get("/api/v1/audit/proof/inclusion")
async def inclusion(request: web.Request) -> web.Response:
    require_auditor(request)
    index, size = _required(request, "leaf_index"), _required(request, "tree_size")
    if index >= size:
        raise ApiError(400, "invalid_request", f"leaf_index must be below tree_size ({size}).")
    async with request.app[POOL].acquire() as connection:
        await _within_log(connection, "tree_size", size)
        proof = await tree.inclusion(connection, index, size)
    return json_response(
        InclusionProof(index, size, b64(proof.leaf_hash), proof.position, [b64(h) for h in proof.hashes])
    )


@routes.get("/api/v1/audit/proof/consistency")
async def consistency(request: web.Request) -> web.Response:
    require_auditor(request)
    first, second = _required(request, "first"), _required(request, "second")
    if first < 1:
        raise ApiError(400, "invalid_request", "first must be 1 or more (every tree extends the empty one).")
    if first > second:
        raise ApiError(400, "invalid_request", f"first must not be above second ({second}).")
    async with request.app[POOL].acquire() as connection:
        await _within_log(connection, "second", second)
        hashes = await tree.consistency(connection, first, second)
    return json_response(ConsistencyProof(first, second, [b64(h) for h in hashes]))


def wants_proof(request: web.Request) -> bool:
    """`?proof=true` of the key history endpoint (another value of proof is refused)."""
    value = request.query.getall("proof", ["false"])
    if len(value) > 1 or value[0] not in ("true", "false"):
        raise ApiError(400, "invalid_request", "proof must be true or false, given once.")
    return value[0] == "true"


async def history_proofs(request: web.Request, connection, positions: list[int]):
    """(signed checkpoint, {position: (leaf index, hex chain hash, EventInclusion)})."""
    size, note, proofs = await checkpoints.inclusion_of(
        connection, request.app[SIGNER], request.app[SETTINGS].log_origin, positions
    )
    return note, {
        position: (leaf, chain_hash.hex(), EventInclusion(size, [b64(h) for h in hashes]))
        for position, (leaf, chain_hash, hashes) in proofs.items()
    }
