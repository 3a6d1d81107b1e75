"""Prometheus metrics of the HTTP API (served on ``/metrics`` from the default registry)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "quotaflow_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "quotaflow_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
DECISION_SECONDS = Histogram(
    "quotaflow_ingress_decision_seconds",
    "From appending a request to its quota decision (timeout: no decision in time)",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
APPEND_SECONDS = Histogram(
    "quotaflow_ingress_append_seconds",
    "Time to append (and have confirmed) one event",
    buckets=_LATENCY_BUCKETS,
)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in _METHODS:  # a client picks the method: keep the label set bounded
                method = "other"
            HTTP_REQUESTS.labels(method, path, str(status)).inc()
            HTTP_SECONDS.labels(method, path).observe(time.perf_counter() - started)
