"""`GET /metrics` in Prometheus' text format, and the middleware that counts every answer.

The counters and histograms are in service/metrics.py; with several worker processes
(`keyledger serve --workers N`) they live in PROMETHEUS_MULTIPROC_DIR and every scrape sums the
workers. The gauges of the answering process (its key cache, whether it leads the projector) and the
projector's lag (read from the database) are computed when scraped. docs/operations.md lists every
series and what to do when it moves.
"""

import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from projections import usage
from service.http.appkeys import KEY_CACHE, POOL, PROJECTOR
from service.store.db import DATABASE_UNAVAILABLE

routes = web.RouteTableDef()

LAG_QUERY_SECONDS = 1.0


async def _projector_lag(app: web.Application) -> float | None:
    """Events in the log that the usage projections have not folded in yet; None without a database."""
    try:
        async with app[POOL].acquire(timeout=LAG_QUERY_SECONDS) as connection:
            return await usage.lag(connection, query_timeout=LAG_QUERY_SECONDS)
    except DATABASE_UNAVAILABLE:
        return None


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def _process_gauges(app: web.Application) -> list[GaugeMetricFamily]:
    cache, lag = app[KEY_CACHE], await _projector_lag(app)
    gauges = [
        _gauge(
            "keyledger_database_up", "1 when this process could query its database just now", lag is not None
        ),
        _gauge("keyledger_key_cache_fresh", "1 while the key cache can prove it is fresh", cache.fresh),
        _gauge("keyledger_key_cache_keys", "Active keys held by the key cache", cache.size),
        _gauge(
            "keyledger_key_cache_age_seconds",
            "Seconds since the key cache last caught up",
            min(cache.seconds_since_confirmed, 1e9),
        ),
        _gauge(
            "keyledger_projector_leader", "1 if this process runs the projector", app[PROJECTOR].is_leader
        ),
    ]
    if lag is not None:
        gauges.append(
            _gauge("keyledger_projector_lag_events", "Events not yet in the usage projections", lag)
        )
    return gauges


class _Snapshot:
    def __init__(self, families: list[GaugeMetricFamily]):
        self._families = families

    def collect(self):
        return self._families


def _shared_registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(_Snapshot(await _process_gauges(request.app)))
    body = generate_latest(_shared_registry()) + generate_latest(gauges)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
