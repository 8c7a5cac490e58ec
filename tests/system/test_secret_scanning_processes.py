"""SPEC "Leaked keys": a report sent to one `keyledger serve` process stops the key in every
process within 1 second. Two processes on one database, configured as an operator would."""

import time

import aiohttp

from tests.helpers import (
    SECRET_SCANNING,
    VERIFY,
    GitHubSigner,
    activate,
    bearer,
    create_key,
    expect,
    leak_report,
    post_body,
    wait_until,
)
from tests.processes import Service, free_port

ACCOUNT = "acct_two_processes"
WITHIN = 1.0  # SPEC: verify refuses it within 1 second, in every process


async def status(session: aiohttp.ClientSession, secret: str) -> int:
    async with session.get(VERIFY, headers=bearer(secret)) as response:
        await response.read()
        return response.status


async def answers(session: aiohttp.ClientSession, secret: str, expected: int) -> bool:
    return await status(session, secret) == expected


async def test_a_key_reported_to_one_process_is_refused_by_the_other_within_a_second(database_url, tmp_path):
    signer = GitHubSigner()
    environment = {"KEYLEDGER_SECRET_SCANNING_KEYS": signer.keys_document()}
    services = [Service(database_url, free_port(), tmp_path / name, **environment) for name in ("a", "b")]
    try:
        receiver, other = [await service.ready() for service in services]
        async with (
            aiohttp.ClientSession(base_url=receiver.base_url) as to_receiver,
            aiohttp.ClientSession(base_url=other.base_url) as to_other,
        ):
            await activate(to_receiver, ACCOUNT)
            created = await create_key(to_receiver, ACCOUNT)
            await wait_until(lambda: answers(to_other, created["key"], 200), within=5.0)

            body = leak_report(created["key"])
            sent = time.monotonic()
            answer = await expect(await post_body(to_receiver, SECRET_SCANNING, body, signer.headers(body)))
            assert [item["label"] for item in answer] == ["true_positive"]
            assert await status(to_receiver, created["key"]) == 403
            left = WITHIN - (time.monotonic() - sent)
            await wait_until(lambda: answers(to_other, created["key"], 403), within=left)
    finally:
        for service in services:
            service.close()
