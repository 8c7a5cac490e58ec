"""Faults with real processes: a PostgreSQL the test stops, crashes, freezes and starts again, and
`keyledger serve` as a subprocess that the test kills (SIGKILL) or stops (SIGTERM).

What an operator relies on:
- without its database the service answers 503 `service_unavailable` within 5 s, never a hang, a
  500 or a stack trace; key verification answers from its cache only while it can prove the cache
  fresh; when the database is back, the same process serves again by itself; a database that is
  slow but answers is waited for, not taken for a hung one;
- a process killed in the middle of usage ingestion loses nothing the gateway client was told was
  stored, and the client's retries store nothing twice;
- SIGTERM lets the requests in flight finish, leaves the projections consistent with the log, and
  exits 0.
"""

import asyncio
import io
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import asyncpg
import pytest

from events.log import APPEND_LOCK
from service.app.keycache import STALE_AFTER
from service.client import KeyledgerClient
from service.store.db import DEADLINE
from tests.helpers import (
    KEYS,
    SERVICE_TOKEN,
    USAGE,
    VERIFY,
    activate,
    auth,
    bearer,
    create_key,
    expect,
    service_headers,
    subscription_path,
    usage_event,
    wait_until,
)
from tests.processes import Service, free_port

pytestmark = pytest.mark.own_server  # a PostgreSQL cluster of its own, which it stops and freezes
ACCOUNT = "acct_faults"
PROMISED = 5.0  # seconds within which a request must be answered, also without a database


@pytest.fixture
async def database_url(cluster) -> AsyncIterator[str]:
    """An empty database of its own on the cluster; `keyledger serve` migrates it."""
    cluster.ensure_running()
    name = f"keyledger_faults_{secrets.token_hex(4)}"
    async with owner(cluster.url) as connection:
        await connection.execute(f"CREATE DATABASE {name}")
    yield cluster.url_of(name)
    cluster.ensure_running()
    async with owner(cluster.url) as connection:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def serve(tmp_path):
    """Start `keyledger serve` on a database; every process started is killed and reaped at the end."""
    started: list[Service] = []

    async def start(database_url: str, port: int | None = None) -> Service:
        service = Service(database_url, port or free_port(), tmp_path / f"service-{len(started)}")
        started.append(service)
        return await service.ready()

    yield start
    for service in started:
        service.close()


@asynccontextmanager
async def owner(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the database owner, to look behind the service's back."""
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def http(service: Service) -> AsyncIterator[aiohttp.ClientSession]:
    # The total timeout only keeps a hanging service from hanging the test; the 5 s are measured.
    timeout = aiohttp.ClientTimeout(total=3 * PROMISED)
    async with aiohttp.ClientSession(base_url=service.base_url, timeout=timeout) as session:
        yield session


async def verified_key(session: aiohttp.ClientSession) -> dict:
    await activate(session, ACCOUNT)
    key = await create_key(session, ACCOUNT)
    await expect(await session.get(VERIFY, headers=bearer(key["key"])))
    return key


class Answer:
    """One request's status, body and how long it took."""

    def __init__(self, label: str, status: int, body: bytes, content_type: str, headers, elapsed: float):
        self.label, self.status, self.body, self.content_type = label, status, body, content_type
        self.headers, self.elapsed = headers, elapsed

    def __repr__(self) -> str:
        return f"{self.label}: {self.status} after {self.elapsed:.2f} s {self.body[:200]!r}"


async def ask(session: aiohttp.ClientSession, label: str, method: str, path: str, **options) -> Answer:
    started = time.monotonic()
    async with session.request(method, path, **options) as response:
        body = await response.read()
    return Answer(
        label, response.status, body, response.content_type, response.headers, time.monotonic() - started
    )


def requests_of_every_kind(key: dict) -> list[tuple[str, str, str, dict]]:
    """(label, method, path, options): one request per kind of caller that needs the database."""
    event = usage_event(key["id"], f"req-{secrets.token_hex(8)}")
    return [
        ("verify", "GET", VERIFY, {"headers": bearer(key["key"])}),
        ("create", "POST", f"{KEYS}/create/", {"json": {"name": "during"}, "headers": auth(ACCOUNT)}),
        ("list", "GET", f"{KEYS}/", {"headers": auth(ACCOUNT)}),
        ("view", "GET", f"{KEYS}/{key['id']}/", {"headers": auth(ACCOUNT)}),
        ("usage", "POST", USAGE, {"json": {"events": [event]}, "headers": service_headers()}),
        (
            "subscription",
            "PUT",
            subscription_path(ACCOUNT),
            {"json": {"status": "active", "plan": "pro"}, "headers": service_headers()},
        ),
        ("audit", "GET", "/api/v1/audit/events", {"headers": service_headers()}),
        ("readyz", "GET", "/readyz", {}),
    ]


async def every_kind(session: aiohttp.ClientSession, key: dict) -> list[Answer]:
    return await asyncio.gather(
        *(
            ask(session, label, method, path, **options)
            for label, method, path, options in requests_of_every_kind(key)
        )
    )


def assert_unavailable(answer: Answer) -> None:
    """A 503 with the JSON envelope, `service_unavailable`, a Retry-After, in time."""
    assert answer.status == 503, answer
    assert answer.content_type == "application/json", answer
    body = json.loads(answer.body)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type"}, answer
    assert body["error"]["type"] == "service_unavailable" and body["error"]["message"], answer
    assert "Retry-After" in answer.headers, answer
    assert answer.elapsed < PROMISED, answer


async def serves_again(session: aiohttp.ClientSession, key: dict) -> bool:
    try:
        verify = await ask(session, "verify", "GET", VERIFY, headers=bearer(key["key"]))
        ready = await ask(session, "readyz", "GET", "/readyz")
    except aiohttp.ClientError:
        return False
    return verify.status == 200 and ready.status == 200


async def assert_every_kind_served(session: aiohttp.ClientSession, key: dict) -> None:
    """Once ready again, each kind of request is served at the first try (no stale connection left)."""
    answers = {answer.label: answer for answer in await every_kind(session, key)}
    expected = {"create": 201, "usage": 202}
    for label, answer in answers.items():
        assert answer.status == expected.get(label, 200), answer


def assert_no_traceback(service: Service) -> None:
    assert "Traceback" not in service.stderr, service.stderr


# The database goes away


async def test_a_stopped_database_answers_503_within_5_s_and_the_same_process_recovers(
    cluster, database_url, serve
):
    """`pg_ctl stop -m immediate`: every connection drops and new ones are refused. Every kind of
    request answers 503 at once; after `pg_ctl start` the same process serves every kind again."""
    service = await serve(database_url)
    async with http(service) as session:
        key = await verified_key(session)

        cluster.stop("immediate")  # every server process quits at once, as in a crash
        stopped_at = time.monotonic()

        # The cache's listener has lost its connection, so the cache cannot prove it is fresh: the
        # next verification asks the database and fails closed.
        async def refused() -> bool:
            return (await ask(session, "verify", "GET", VERIFY, headers=bearer(key["key"]))).status != 200

        await wait_until(refused, within=1.0)
        answers = await every_kind(session, key)
        for answer in answers:
            assert_unavailable(answer)
        slowest = max(answer.elapsed for answer in answers)

        cluster.start()
        recovered_in = await wait_until(lambda: serves_again(session, key), within=15, interval=0.05)
        await assert_every_kind_served(session, key)

    assert service.process.poll() is None  # the same process, never restarted
    assert_no_traceback(service)
    print(
        f"database stopped: 503 within {slowest:.3f} s (down for {time.monotonic() - stopped_at:.1f} s); "
        f"serving again {recovered_in:.2f} s after the database was back"
    )


async def test_a_hung_database_answers_503_within_5_s_once_the_cache_cannot_prove_it_is_fresh(
    cluster, database_url, serve
):
    """SIGSTOP on every server process: connections stay open and nothing answers, the hardest case
    for a client, since no error ever arrives. Verification answers from the cache while it can prove
    it fresh (a catch-up succeeded within STALE_AFTER seconds), then fails closed with 503."""
    service = await serve(database_url)
    async with http(service) as session:
        key = await verified_key(session)

        cluster.freeze()
        frozen_at = time.monotonic()
        try:
            verdicts: list[tuple[float, Answer]] = []  # (seconds after the freeze it was sent, answer)

            async def verify_until_refused() -> None:
                while not verdicts or verdicts[-1][1].status == 200:
                    sent = time.monotonic() - frozen_at
                    answer = await ask(session, "verify", "GET", VERIFY, headers=bearer(key["key"]))
                    verdicts.append((sent, answer))
                    assert sent < STALE_AFTER + 2 * PROMISED, verdicts[-1]
                    await asyncio.sleep(0.05)

            async def crowd_once_stale() -> list[Answer]:
                # Many callers at once, more than the pool has connections: none may wait past 5 s.
                await asyncio.sleep(max(0.0, frozen_at + STALE_AFTER + 0.3 - time.monotonic()))
                return await asyncio.gather(
                    *(ask(session, "verify", "GET", VERIFY, headers=bearer(key["key"])) for _ in range(25))
                )

            others, _, crowd = await asyncio.gather(
                every_kind(session, key), verify_until_refused(), crowd_once_stale()
            )
        finally:
            cluster.thaw()
        thawed_at = time.monotonic()

        early = [answer for sent, answer in verdicts if sent < 0.9]
        assert early and all(answer.status == 200 for answer in early), verdicts[:5]
        assert all(answer.elapsed < PROMISED for _, answer in verdicts), verdicts
        late = [(round(sent, 2), answer) for sent, answer in verdicts if sent > STALE_AFTER + 0.3]
        assert all(answer.status == 503 for _, answer in late), late  # never a 200 from a stale cache
        assert_unavailable(verdicts[-1][1])
        for answer in others:
            if answer.label == "verify":
                assert answer.status == 200, answer  # sent as the database froze: the cache is fresh
            else:
                assert_unavailable(answer)
        for answer in crowd:
            assert_unavailable(answer)

        recovered_in = await wait_until(lambda: serves_again(session, key), within=15, interval=0.05)
        await assert_every_kind_served(session, key)

    assert service.process.poll() is None
    assert_no_traceback(service)
    last_200 = max(sent for sent, answer in verdicts if answer.status == 200)
    print(
        f"database hung: cache answered until {last_200:.2f} s, first 503 sent at {verdicts[-1][0]:.2f} s "
        f"and answered in {verdicts[-1][1].elapsed:.2f} s; others in at most "
        f"{max(a.elapsed for a in [*others, *crowd]):.2f} s; serving again {recovered_in:.2f} s after "
        f"the thaw ({thawed_at - frozen_at:.1f} s frozen)"
    )


async def test_a_database_that_answers_slowly_is_waited_for_not_taken_for_a_hung_one(database_url, serve):
    """A usage batch waits for the append lock (the test holds it) past the deadline, while the
    database answers everything else: the batch is stored and answered 202, not refused with 503."""
    service = await serve(database_url)
    async with http(service) as session:
        await activate(session, ACCOUNT)
        key = await create_key(session, ACCOUNT)
        event = usage_event(key["id"], "req-slow")
        async with owner(database_url) as connection:
            lock = connection.transaction()
            await lock.start()
            try:
                await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                post = asyncio.create_task(
                    ask(session, "usage", "POST", USAGE, json={"events": [event]}, headers=service_headers())
                )
                await wait_until(lambda: has_waiters(connection, 1), within=PROMISED, interval=0.01)
                held_since = time.monotonic()
                while time.monotonic() - held_since < DEADLINE + 1:  # the database answers others meanwhile
                    assert (await ask(session, "readyz", "GET", "/readyz")).status == 200
                    await asyncio.sleep(0.2)
                assert not post.done()
            finally:
                await lock.rollback()
            answer = await post
    assert answer.status == 202 and json.loads(answer.body) == {"accepted": 1, "duplicates": 0}, answer
    assert answer.elapsed > DEADLINE, answer
    assert_no_traceback(service)


# The service dies


async def test_a_service_killed_mid_ingestion_loses_and_doubles_nothing_the_client_retries(
    database_url, serve
):
    """The gateway client (service/client.py) reports 20,000 requests in batches of 500. The service
    is killed with SIGKILL while a batch is in the middle of its append (the test holds the append
    lock, so the kill lands there), and a new process starts on the same database and port. The client
    resends what was not acknowledged; then it resends batches that were stored, as after a 202 lost
    with a process. Every acknowledged event is in the log, each exactly once."""
    total, batch_size = 20_000, 500
    first = await serve(database_url)
    async with http(first) as session:
        await activate(session, ACCOUNT)
        keys = [(await create_key(session, ACCOUNT, f"gateway {n}"))["id"] for n in range(3)]

    client = KeyledgerClient(
        first.base_url, SERVICE_TOKEN, batch_size=batch_size, flush_interval=0.01, timeout=PROMISED
    )
    acknowledged: list[str] = []  # request ids of the batches answered 202, in order
    send = client._send  # the client resends a batch until it is answered 202, then returns

    async def send_and_record(batch: list[dict]) -> None:
        await send(batch)
        acknowledged.extend(event["request_id"] for event in batch)

    client._send = send_and_record
    request_ids = [f"req-kill-{n:05d}" for n in range(total)]

    async def report(numbers: range) -> None:
        for n in numbers:
            cost = f"0.{n % 1000:03d}000150"
            await client.report(keys[n % 3], cost, units=n, endpoint="/v1/chat", request_id=request_ids[n])

    await client.start()
    try:
        await report(range(total))
        async with owner(database_url) as connection:

            async def stored() -> int:
                return await connection.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'")

            async def some_stored() -> bool:
                return await stored() >= 3 * batch_size

            await wait_until(some_stored, within=20, interval=0.005)
            lock = connection.transaction()
            await lock.start()
            try:
                await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                await wait_until(lambda: has_waiters(connection, 1), within=PROMISED, interval=0.005)
                first.signal(signal.SIGKILL)  # a batch waits, mid-append, for the lock
                assert await first.exit_code(within=5) == -signal.SIGKILL
            finally:
                await lock.rollback()
            stored_at_kill, acknowledged_at_kill = await stored(), len(acknowledged)
            assert 0 < stored_at_kill < total and acknowledged_at_kill < total  # killed mid-way

            second = await serve(database_url, port=first.port)
            await wait_until(lambda: len(acknowledged) == total, within=30, interval=0.05)
            resent = range(stored_at_kill)  # stored before the kill: resending them must add nothing
            await report(resent)
            await wait_until(lambda: len(acknowledged) == total + len(resent), within=30, interval=0.05)
    finally:
        await client.close()

    async with owner(database_url) as connection:
        counts = dict(
            await connection.fetch(
                """SELECT idempotency_key, count(*) FROM events
                   WHERE type = 'UsageRecorded' GROUP BY idempotency_key"""
            )
        )
    assert sorted(acknowledged[:total]) == request_ids  # the client saw each batch acknowledged once
    missing = [request_id for request_id in request_ids if request_id not in counts]
    assert not missing, f"{len(missing)} acknowledged events are not in the log, e.g. {missing[:3]}"
    twice = {request_id: count for request_id, count in counts.items() if count != 1}
    assert not twice, f"stored more than once: {list(twice.items())[:3]}"
    assert set(counts) == set(request_ids)
    assert_no_traceback(first)
    assert_no_traceback(second)
    print(
        f"killed mid-append with {stored_at_kill} events stored and {acknowledged_at_kill} acknowledged; "
        f"all {total} stored exactly once after the retries and {len(resent)} resent"
    )


# The service is asked to stop


def usage_batch(key_ids: list[str], prefix: str, size: int) -> bytes:
    now = datetime.now(UTC)
    events = [
        usage_event(key_ids[n % len(key_ids)], f"{prefix}-{n:05d}", f"0.{n:09d}", occurred_at=now)
        for n in range(size)
    ]
    return json.dumps({"events": events}).encode()


async def totals_from_the_log(connection: asyncpg.Connection, up_to: int) -> dict[str, tuple[int, Decimal]]:
    rows = await connection.fetch(
        """SELECT data->>'key_id' AS key_id, count(*) AS requests, sum((data->>'cost_chf')::numeric) AS cost
           FROM event_log WHERE type = 'UsageRecorded' AND position <= $1 GROUP BY 1""",
        up_to,
    )
    return {row["key_id"]: (row["requests"], row["cost"]) for row in rows}


async def projected_totals(connection: asyncpg.Connection) -> dict[str, tuple[int, Decimal]]:
    rows = await connection.fetch("SELECT key_id, requests, cost_chf FROM key_usage_totals")
    return {row["key_id"]: (row["requests"], row["cost_chf"]) for row in rows}


async def projected_daily_match_the_totals(connection: asyncpg.Connection) -> bool:
    return await connection.fetchval(
        """SELECT NOT EXISTS (
               SELECT key_id, sum(requests), sum(cost_chf) FROM key_usage_daily GROUP BY key_id
               EXCEPT SELECT key_id, requests, cost_chf FROM key_usage_totals)
              AND (SELECT count(DISTINCT key_id) FROM key_usage_daily)
                  = (SELECT count(*) FROM key_usage_totals)"""
    )


async def checkpoint(connection: asyncpg.Connection) -> int:
    return await connection.fetchval(
        "SELECT coalesce((SELECT position FROM projector_checkpoints WHERE projector = 'usage'), 0)"
    )


async def waiting_for_the_append_lock(connection: asyncpg.Connection) -> int:
    return await connection.fetchval(
        """SELECT count(*) FROM pg_locks
           WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    )


async def assert_projections_consistent_after_sigterm(
    database_url: str, serve, expected_requests: int, expected_cost: Decimal
) -> int:
    """The projector of the stopped process committed or rolled back whole: its totals are exactly
    the log up to its checkpoint. A new process then projects the rest, nothing twice. Returns the
    checkpoint the stopped process had reached."""
    async with owner(database_url) as connection:
        stopped_at = await checkpoint(connection)
        assert await projected_totals(connection) == await totals_from_the_log(connection, stopped_at)
        assert await projected_daily_match_the_totals(connection)

        fresh = await serve(database_url)
        head = await connection.fetchval("SELECT max(position) FROM events")
        await wait_until(lambda: caught_up(connection, head), within=30, interval=0.05)
        projected = await projected_totals(connection)
        assert projected == await totals_from_the_log(connection, head)
        assert sum(requests for requests, _ in projected.values()) == expected_requests
        assert sum(cost for _, cost in projected.values()) == expected_cost
        assert await projected_daily_match_the_totals(connection)
    fresh.signal(signal.SIGTERM)
    assert await fresh.exit_code(within=30) == 0, fresh.stderr
    assert_no_traceback(fresh)
    return stopped_at


async def test_sigterm_lets_the_requests_in_flight_finish_and_exits_0_with_consistent_projections(
    database_url, serve
):
    """Three batches of 10,000 events are in the middle of their append (each waits for the append
    lock, which the test holds) when the service gets SIGTERM: each is answered 202 and stored whole,
    the process exits 0, and the projections agree with the log."""
    in_flight, size = 3, 10_000
    service = await serve(database_url)
    async with http(service) as session:
        await activate(session, ACCOUNT)
        keys = [(await create_key(session, ACCOUNT, f"term {n}"))["id"] for n in range(4)]
        batches = [usage_batch(keys, f"req-term-{n}", size) for n in range(in_flight)]
        async with owner(database_url) as connection:
            lock = connection.transaction()
            await lock.start()
            try:
                await connection.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
                posts = [asyncio.create_task(post_usage(session, batch)) for batch in batches]
                await wait_until(lambda: has_waiters(connection, in_flight), within=PROMISED, interval=0.01)
                service.signal(signal.SIGTERM)
            finally:
                await lock.rollback()
            answers = await asyncio.gather(*posts)
    for answer in answers:
        assert answer.status == 202, answer
        assert json.loads(answer.body) == {"accepted": size, "duplicates": 0}, answer
    assert await service.exit_code(within=30) == 0, service.stderr
    assert_no_traceback(service)

    async with owner(database_url) as connection:
        stored = await connection.fetchval("SELECT count(*) FROM events WHERE type = 'UsageRecorded'")
    assert stored == in_flight * size
    expected_cost = sum(Decimal(f"0.{n:09d}") for n in range(size)) * in_flight
    stopped_at = await assert_projections_consistent_after_sigterm(
        database_url, serve, in_flight * size, expected_cost
    )
    print(
        f"SIGTERM: {in_flight} batches of {size} in flight answered 202; projector had reached {stopped_at}"
    )


async def has_waiters(connection: asyncpg.Connection, count: int) -> bool:
    return await waiting_for_the_append_lock(connection) >= count


async def post_usage(session: aiohttp.ClientSession, batch: bytes) -> Answer:
    # A stream: aiohttp warns about large bodies given as bytes (and warnings are errors here).
    headers = {**service_headers(), "Content-Type": "application/json"}
    return await ask(session, "usage", "POST", USAGE, data=io.BytesIO(batch), headers=headers)


async def test_sigterm_while_a_batch_is_still_arriving_lets_it_finish(database_url, serve):
    """The service has begun a request (it answered `100 Continue`, so its handler runs) when it gets
    SIGTERM, and the body arrives after that: the request was in flight and must be answered."""
    size = 10_000
    service = await serve(database_url)
    async with http(service) as session:
        await activate(session, ACCOUNT)
        keys = [(await create_key(session, ACCOUNT, f"arriving {n}"))["id"] for n in range(2)]
    batch = usage_batch(keys, "req-arriving", size)
    begun, stopping = asyncio.Event(), asyncio.Event()

    async def body():
        begun.set()  # with expect100, aiohttp asks for the body once the service said 100 Continue
        await stopping.wait()
        yield batch

    timeout = aiohttp.ClientTimeout(total=PROMISED)
    async with aiohttp.ClientSession(base_url=service.base_url, timeout=timeout) as session:
        headers = {**service_headers(), "Content-Type": "application/json"}
        post = asyncio.create_task(
            ask(session, "usage", "POST", USAGE, data=body(), headers=headers, expect100=True)
        )
        await asyncio.wait_for(begun.wait(), PROMISED)
        service.signal(signal.SIGTERM)
        await wait_until(lambda: refuses_connections(service.port), within=PROMISED)  # it is stopping
        stopping.set()
        answer = await post
    assert answer.status == 202, answer
    assert await service.exit_code(within=30) == 0, service.stderr
    assert_no_traceback(service)
    await assert_projections_consistent_after_sigterm(
        database_url, serve, size, sum(Decimal(f"0.{n:09d}") for n in range(size))
    )


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: the listener closed as we knocked
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def caught_up(connection: asyncpg.Connection, head: int) -> bool:
    return await checkpoint(connection) >= head
