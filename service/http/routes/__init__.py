"""The routes of the API, one module per resource."""

from service.http.routes import (
    audit,
    checkpoints,
    dashboard,
    keys,
    metrics,
    ops,
    secret_scanning,
    subscriptions,
    usage,
    verify,
)

ROUTES = tuple(
    module.routes
    for module in (
        keys,
        verify,
        usage,
        subscriptions,
        audit,
        checkpoints,
        ops,
        metrics,
        dashboard,
        secret_scanning,
    )
)
