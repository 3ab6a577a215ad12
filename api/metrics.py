"""`/metrics` in Prometheus' text format: the domain figures read from PostgreSQL at scrape time
(`service.metrics`), and what this API process counted itself: requests by route and status, and
provider webhook calls by outcome (accepted, refused, failed).

No borrower data in any label: routes are their templates (`/v1/cases/{loan_id}`), never paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import asyncpg
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Db
from service.metrics import Figure, domain_figures

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
WEBHOOK_PREFIXES: Final = ("/webhooks/", "/v1/webhooks/")

REQUESTS: Final = Counter("collections_api_requests", "HTTP requests answered by the API",
                          ("method", "route", "status"))
WEBHOOK_CALLS: Final = Counter("collections_webhook_calls",
                               "Provider webhook calls, by route and outcome",
                               ("route", "outcome"))

router = APIRouter(tags=["health"])


def _outcome(status: int) -> str:
    return "accepted" if status < 400 else "refused" if status < 500 else "failed"


class CountRequests:
    """ASGI middleware: one count per answered request, under its route's template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            if route.startswith(WEBHOOK_PREFIXES):
                WEBHOOK_CALLS.labels(route, _outcome(status)).inc()


class _Figures(Collector):
    def __init__(self, figures: list[Figure]) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        for f in self.figures:
            family = (CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily)(
                f.name, f.help, labels=f.labels)
            for labels, value in f.samples:
                family.add_metric(list(labels), value)
            yield family


@router.get("/metrics", include_in_schema=False)
async def metrics(pool: Db) -> Response:
    """Prometheus scrape: the process's own counters, then the domain figures."""
    try:
        figures = await domain_figures(pool)
        up = 1.0
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        figures, up = [], 0.0  # the process's counters still answer
    figures.append(Figure("collections_database_up", "gauge",
                          "Whether PostgreSQL answered this scrape", (), [((), up)]))
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Figures(figures))
    return Response(generate_latest(REGISTRY) + generate_latest(scraped),
                    media_type=CONTENT_TYPE)
