"""The FastAPI app: routes, the error shape, middleware, and the services' lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Scope

from streams.ingress import errors
from streams.ingress.fastpath import FastSubmit
from streams.ingress.limits import BodyLimitMiddleware
from streams.ingress.metrics import MetricsMiddleware
from streams.ingress.routes import admin, ops, requests, tenants
from streams.ingress.services import Services
from streams.ingress.settings import IngressSettings
from streams.log import EventLog

DESCRIPTION = """\
Inference requests in, quota decisions out: every request is appended to the event log and
answered with the quota agent's decision (or `pending` if it is late).

Authenticate with `Authorization: Bearer <key>`: a tenant's API key for the tenant routes, the
admin key for `/v1/admin`. Every error has the body `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: IngressSettings | None = None, *, log: EventLog | None = None) -> FastAPI:
    """The API. ``log`` replaces the event log the settings name (tests)."""
    config = settings if settings is not None else IngressSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.open(config, log)
        app.state.services = services
        try:
            yield
        finally:
            app.state.services = None
            await services.close()

    app = FastAPI(
        title="quotaflow",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # OpenTelemetry is not configured here (Prometheus is); without this FastAPI looks up
        # three environment variables on every request to find out
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = None
    errors.install(app)
    for module in (requests, tenants, admin, ops):
        app.include_router(module.router)
    if config.fast_path:
        app.add_middleware(FastSubmit, services=_services)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app


def _services(scope: Scope) -> Services | None:
    app = scope.get("app")
    return None if app is None else getattr(app.state, "services", None)
