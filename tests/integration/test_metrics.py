"""/metrics: Prometheus text that an operator can alert on (docs/operations.md lists the series)."""

import asyncio

import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.store import db
from tests.helpers import (
    KEYS,
    VERIFY,
    activate,
    auth,
    bearer,
    create_key,
    send_usage,
    usage_event,
    wait_until,
)
from tests.processes import running_service


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template_and_status(client):
    before = await scrape(client)
    created = await create_key(client, "acct_metrics")
    await client.get(f"{KEYS}/{created['id']}/", headers=auth("acct_metrics"))
    await client.get(f"{KEYS}/key_unknown/", headers=auth("acct_metrics"))
    after = await scrape(client)

    view = "/api/v1/accounts/user/api-keys/{key_id}/"
    for status, count in (("200", 1), ("404", 1)):
        name = "keyledger_http_requests_total"
        labels = {"route": view, "method": "GET", "status": status}
        assert value(after, name, **labels) - value(before, name, **labels) == count
    assert not any(created["id"] in str(labels) for _, labels in after), "a key id became a label"
    histogram = "keyledger_http_request_duration_seconds_count"
    assert value(after, histogram, route=view) - value(before, histogram, route=view) == 2


async def test_verifications_are_counted_by_outcome_and_source(client):
    created = await create_key(client, "acct_metrics_verify")
    await activate(client, "acct_metrics_verify")
    before = await scrape(client)
    assert (await client.get(VERIFY, headers=bearer(created["key"]))).status == 200
    assert (await client.get(VERIFY, headers=bearer("sk-not-a-key"))).status == 403
    after = await scrape(client)

    def delta(outcome: str, source: str) -> float:
        name = "keyledger_verifications_total"
        return value(after, name, outcome=outcome, source=source) - value(
            before, name, outcome=outcome, source=source
        )

    assert delta("valid", "cache") + delta("valid", "database") == 1
    assert delta("malformed", "checksum") == 1


async def test_usage_events_are_counted_accepted_and_duplicate(client):
    created = await create_key(client, "acct_metrics_usage")
    events = [usage_event(created["id"], request_id=f"req-metrics-{n}") for n in range(3)]
    before = await scrape(client)
    assert (await send_usage(client, events)).status == 202
    assert (await send_usage(client, events[:2])).status == 202
    after = await scrape(client)
    name = "keyledger_usage_events_total"
    assert value(after, name, result="accepted") - value(before, name, result="accepted") == 3
    assert value(after, name, result="duplicate") - value(before, name, result="duplicate") == 2


async def test_the_process_gauges_say_how_fresh_the_cache_and_the_projections_are(client):
    created = await create_key(client, "acct_metrics_gauges")
    assert (await send_usage(client, [usage_event(created["id"], request_id="req-gauges")])).status == 202

    async def projected() -> bool:
        return value(await scrape(client), "keyledger_projector_lag_events") == 0

    await wait_until(projected, within=10)
    samples = await scrape(client)
    assert value(samples, "keyledger_database_up") == 1
    assert value(samples, "keyledger_key_cache_fresh") == 1
    assert value(samples, "keyledger_key_cache_keys") >= 1
    assert value(samples, "keyledger_projector_leader") == 1
    assert 0 <= value(samples, "keyledger_key_cache_age_seconds") < 5


def healthz_count(base_url: str) -> float:
    families = text_string_to_metric_families(requests.get(f"{base_url}/metrics", timeout=5).text)
    return sum(
        sample.value
        for family in families
        if family.name == "keyledger_http_requests"
        for sample in family.samples
        if sample.labels.get("route") == "/healthz"
    )


def test_with_two_workers_every_scrape_counts_the_requests_of_both(server_url, template_database):
    """Each request and each scrape on a new connection, which either worker may accept: every scrape
    must see all 40 (without the shared multiprocess directory each would see its own share)."""
    with running_service(server_url, template_database, "--workers", "2") as base_url:
        for _ in range(40):
            assert requests.get(f"{base_url}/healthz", headers={"Connection": "close"}, timeout=5).ok
        assert [healthz_count(base_url) for _ in range(6)] == [40] * 6


async def test_a_lost_dedicated_connection_is_counted_as_a_reconnect():
    attempts = 0

    async def connect():
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("the database is away")

    name = "metrics-test-task"
    before = REGISTRY.get_sample_value("keyledger_database_reconnects_total", {"task": name}) or 0
    task = asyncio.create_task(db.keep_connected(connect, None, name, pause=0.01))
    await wait_until(lambda: attempts >= 3, within=5)
    task.cancel()
    after = REGISTRY.get_sample_value("keyledger_database_reconnects_total", {"task": name})
    assert after - before >= 2
