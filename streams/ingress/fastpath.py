"""The fast path of ``POST /v1/requests``: the hottest route, served as plain ASGI.

Profiling the API at a few hundred requests/s on the 2-core machine put FastAPI's per-request
machinery (routing, dependency solving, body parsing in Python) at about a third of the
server's CPU, as much as everything else a request does. This middleware serves exactly
``POST /v1/requests`` itself — bearer auth, the ``Idempotency-Key`` header, the body validated
by pydantic from the raw bytes — and hands everything else to FastAPI. What the request then
does is :func:`streams.ingress.submit.submit`, the same function the FastAPI route (which
documents the operation in ``/openapi.json``) calls. Errors have the same body as everywhere
(:mod:`streams.ingress.errors`); ``QUOTAFLOW_FAST_PATH=false`` switches it off.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from streams.ingress import submit as submitting
from streams.ingress.errors import ApiError, error_response, response_for, validation_response
from streams.ingress.routes.requests import IDEMPOTENCY_KEY_PATTERN
from streams.ingress.schemas import InferenceRequestBody
from streams.ingress.services import Services

PATH = "/v1/requests"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_JSON = re.compile(rb"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)


class _Route:
    """What the metrics middleware reads from ``scope["route"]``."""

    path = PATH


_ROUTE = _Route()


class FastSubmit:
    def __init__(self, app: ASGIApp, services: Callable[[Scope], Services | None]) -> None:
        self.app = app
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE
        try:
            response = await self._handle(scope, receive)
        except Exception as exc:
            response = response_for(exc, "POST", PATH)
        await response(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        svc = self._services(scope)
        if svc is None:
            raise ApiError(503, "service_unavailable", "the API is starting or stopping")
        authorization = content_type = idempotency_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"idempotency-key":
                idempotency_key = value
        caller = await svc.auth.principal(_bearer(authorization))
        if caller.tenant_id is None:
            raise ApiError(403, "forbidden", "this route needs a tenant's API key")
        key = None if idempotency_key is None else idempotency_key.decode("latin-1")
        if key is not None and _IDEMPOTENCY_KEY.match(key) is None:
            return error_response(
                422,
                "invalid_request",
                "header.Idempotency-Key: 1 to 200 visible ASCII characters",
                {"fields": [{"field": "header.Idempotency-Key", "message": "invalid",
                             "type": "string_pattern_mismatch"}]},
            )  # fmt: skip
        if content_type is not None and _JSON.match(content_type) is None:
            return error_response(
                415, "unsupported_media_type", "the request body must be application/json"
            )
        body = await _read(receive)
        if not body.strip():
            return validation_response(
                [{"loc": ("body",), "msg": "a JSON object is required", "type": "missing"}]
            )
        try:
            request = InferenceRequestBody.model_validate_json(body)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
            return validation_response(errors)
        return await submitting.submit(svc, caller.tenant_id, request, key)


def _bearer(header: bytes | None) -> str | None:
    """The credentials of ``Authorization: Bearer <credentials>`` (``None`` otherwise)."""
    if header is None:
        return None
    scheme, _, credentials = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


async def _read(receive: Receive) -> bytes:
    """The whole body (:class:`streams.ingress.limits.BodyLimitMiddleware` bounds it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, "bad_request", "the client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
