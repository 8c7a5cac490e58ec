"""The counters and histograms of /metrics (service/metrics_api.py serves them with the gauges).

A leaf module: anything may import it. With several worker processes (`keyledger serve --workers N`)
prometheus-client keeps them in PROMETHEUS_MULTIPROC_DIR and every scrape sums the workers.
"""

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "keyledger_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "keyledger_http_request_duration_seconds",
    "Time to answer, by route template",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
VERIFICATIONS = Counter(
    "keyledger_verifications",
    "Key verifications by outcome (valid, invalid, expired, unsubscribed, over_limit, malformed) and source (cache, database, checksum)",
    ["outcome", "source"],
)
USAGE_EVENTS = Counter(
    "keyledger_usage_events", "Usage events reported, by result (accepted, duplicate)", ["result"]
)
RECONNECTS = Counter(
    "keyledger_database_reconnects",
    "Dedicated connections (key cache, projector) lost and reopened",
    ["task"],
)
