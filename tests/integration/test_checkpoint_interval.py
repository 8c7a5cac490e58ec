"""SPEC: "A new checkpoint is made at least every 10 seconds while the log grows", with the interval
keyledger ships (every other test signs each batch, interval 0): while events are appended for two
intervals and more, checkpoints come no more often than the interval, each event is under a signed
checkpoint within the interval of its append, and the newest is what GET /checkpoint answers."""

import asyncio
import dataclasses
import itertools
import random

from events.note import Checkpoint, open_note
from service.config import Settings
from service.http.app import create_app
from service.http.appkeys import SIGNER
from tests.helpers import service_headers, wait_until

SHIPPED = next(field.default for field in dataclasses.fields(Settings) if field.name == "checkpoint_interval")
SCHEDULING = 2.0  # seconds a shared 2-core machine may take to run the writer once it is due


async def newest_size(client) -> int:
    response = await client.get("/api/v1/audit/checkpoint", headers=service_headers())
    assert response.status == 200
    return Checkpoint.parse(open_note(await response.text(), client.server.app[SIGNER].verifier)).size


async def test_while_the_log_grows_a_checkpoint_is_signed_every_interval_and_no_more_often(
    aiohttp_client, settings, admin
):
    assert SHIPPED == 10.0
    client = await aiohttp_client(create_app(dataclasses.replace(settings, checkpoint_interval=SHIPPED)))
    await wait_until(lambda: admin.fetchval("SELECT count(*) = 1 FROM checkpoints"), within=10)
    loop = asyncio.get_running_loop()
    growing_until = loop.time() + 2.3 * SHIPPED
    while loop.time() < growing_until:
        await admin.execute(
            """INSERT INTO events (stream_id, account_id, type, data, hash)
               VALUES ('test-stream', 'acct_t', 'TestRecorded', '{}', $1)""",
            random.randbytes(32),
        )
        await asyncio.sleep(0.25)
    appended = await admin.fetchval("SELECT count(*) FROM events")
    await wait_until(lambda: _is(newest_size(client), appended), within=SHIPPED + SCHEDULING)

    made = await admin.fetch("SELECT tree_size, made_at FROM checkpoints ORDER BY tree_size")
    spacing = [
        (later["made_at"] - earlier["made_at"]).total_seconds() for earlier, later in itertools.pairwise(made)
    ]
    assert len(made) >= 4, made  # size 0, then at least three while it grew for 23 s
    assert min(spacing) >= SHIPPED - 0.05, spacing
    recorded = [row[0] for row in await admin.fetch("SELECT recorded_at FROM events ORDER BY position")]
    for leaf, at in enumerate(recorded):
        signed = next(row["made_at"] for row in made if row["tree_size"] > leaf)
        assert (signed - at).total_seconds() <= SHIPPED + SCHEDULING, (leaf, at, signed)


async def _is(size, expected: int) -> bool:
    return await size == expected
