"""The HTTP API of quotaflow: requests in, quota decisions out, views read.

* :mod:`~streams.ingress.app` — :func:`create_app`, the FastAPI app and its lifespan;
* :mod:`~streams.ingress.services` — what the routes use (log, Redis, PostgreSQL, waiter);
* :mod:`~streams.ingress.routes` — the routes, one module per resource;
* :mod:`~streams.ingress.auth` — bearer keys: tenant keys (by sha256) and the admin key;
* :mod:`~streams.ingress.errors` — the one error body shape and its handlers;
* :mod:`~streams.ingress.waiter` — one consumer of every ``quota`` partition per process;
* :mod:`~streams.ingress.idempotency` — ``Idempotency-Key`` markers;
* :mod:`~streams.ingress.metrics` — Prometheus metrics and the ASGI middleware.

Run it with ``quotaflow serve`` (uvicorn, one process per replica).
"""

from streams.ingress.app import create_app
from streams.ingress.settings import IngressSettings

__all__ = ["IngressSettings", "create_app"]
