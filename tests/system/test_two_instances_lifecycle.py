"""Expiry, rotation grace and spend limits across processes: two `keyledger serve` on one database, changes made
through A, verification asked of B (SPEC "Expiry, rotation, spend limits": expired everywhere within
1 second, both keys verify during the grace). No event happens at an expiry: B must know the instant.
"""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from tests.helpers import (
    activate,
    create_key,
    expect,
    rfc3339,
    rotate_key,
    send_usage,
    update_key,
    usage_event,
    utc,
    verdict,
    view_key,
    wait_until,
)
from tests.processes import Service, free_port

pytestmark = pytest.mark.own_server  # a PostgreSQL cluster of its own, shared by the two processes
ACCOUNT = "acct_two_instances"
PROPAGATION = 1.0  # SPEC: a change, and an expiry, reach every process within 1 second
VALID, EXPIRED = (200, None), (403, "key_expired")


@pytest.fixture
async def instances(cluster, tmp_path) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    """Sessions to A and B, two processes on one empty database (A migrates it, then B starts)."""
    name = f"keyledger_two_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(cluster.url)
    await connection.execute(f"CREATE DATABASE {name}")
    started = []
    try:
        for label in ("a", "b"):
            started.append(Service(cluster.url_of(name), free_port(), tmp_path / label))
            await started[-1].ready()
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(base_url=started[0].base_url, timeout=timeout) as a,
            aiohttp.ClientSession(base_url=started[1].base_url, timeout=timeout) as b,
        ):
            yield a, b
    finally:
        for service in started:
            service.close()
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.close()


async def answers(session, secret: str, expected: tuple[int, str | None]) -> bool:
    return await verdict(session, secret) == expected


async def verdicts_across(session, secret: str, instant: float) -> list[tuple[float, tuple]]:
    """Ask as fast as one caller can, from before the instant until a second after it."""
    asked = []
    while (sent := time.time()) < instant + PROPAGATION:
        asked.append((sent, await verdict(session, secret)))
    return asked


async def test_b_lets_the_old_key_through_during_a_grace_set_through_a_and_refuses_it_after(instances):
    a, b = instances
    await activate(a, ACCOUNT)
    old = await create_key(a, ACCOUNT)
    await wait_until(lambda: answers(b, old["key"], VALID), within=5)

    new = await expect(await rotate_key(a, ACCOUNT, old["id"], {"grace_period_seconds": 2}), 201)
    ends = utc((await view_key(a, ACCOUNT, old["id"]))["expires_at"])
    await wait_until(lambda: answers(b, new["key"], VALID), within=PROPAGATION)
    assert await verdict(b, old["key"]) == VALID
    assert time.time() < ends.timestamp(), "the machine was too slow to verify during the grace"

    asked = await verdicts_across(b, old["key"], ends.timestamp())
    assert {answer for sent, answer in asked if sent < ends.timestamp() - 0.05} <= {VALID}
    after = [answer for sent, answer in asked if sent >= ends.timestamp()]
    assert after and set(after) == {EXPIRED}, after
    assert await verdict(b, new["key"]) == VALID


async def test_an_expiry_set_through_a_is_enforced_by_b_at_its_instant(instances):
    a, b = instances
    await activate(a, ACCOUNT)
    key = await create_key(a, ACCOUNT)
    await wait_until(lambda: answers(b, key["key"], VALID), within=5)

    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    updated = await expect(await update_key(a, ACCOUNT, key["id"], {"expires_at": rfc3339(expires_at)}))
    instant = utc(updated["expires_at"]).timestamp()
    assert time.time() < instant - PROPAGATION, "the machine was too slow to set the expiry in time"
    await asyncio.sleep(PROPAGATION)  # B has heard of the expiry by now (SPEC), but it has not come

    asked = await verdicts_across(b, key["key"], instant)
    before = [answer for sent, answer in asked if sent < instant - 0.05]
    after = [answer for sent, answer in asked if sent >= instant]
    assert before and set(before) == {VALID}, before
    assert after and set(after) == {EXPIRED}, after


async def test_b_refuses_a_key_over_its_limit_from_usage_reported_to_a_and_lifts_it_when_a_raises_it(
    instances,
):
    """SPEC: the limit takes effect within 2 s of the usage being accepted, in every process; raising
    it lifts it within 1 s. The usage goes to A; B's projector or A's folds it, B's cache refuses."""
    a, b = instances
    await activate(a, ACCOUNT)
    key = await create_key(a, ACCOUNT, monthly_spend_limit_chf="0.0002")
    await wait_until(lambda: answers(b, key["key"], VALID), within=5)

    usage = [usage_event(key["id"], f"two-instances-{n}", "0.000100") for n in range(2)]
    await expect(await send_usage(a, usage), 202)
    await wait_until(lambda: answers(b, key["key"], (402, "spend_limit_reached")), within=2.0)

    await expect(await update_key(a, ACCOUNT, key["id"], {"monthly_spend_limit_chf": "1"}))
    await wait_until(lambda: answers(b, key["key"], VALID), within=PROPAGATION)
