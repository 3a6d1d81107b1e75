"""One error body for every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``.

Routes raise :class:`ApiError`; FastAPI's validation errors, Starlette's HTTP errors and any
unexpected exception are turned into the same shape by the handlers registered by
:func:`install`. A client's mistake is always a 4xx; a 5xx means the service failed (and its
body says nothing about the internals).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from streams.log import LogError

log = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """A JSON response rendered by orjson (plain data: dicts, lists, str, numbers)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorInfo


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers) if headers is not None else None


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> OrjsonResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return OrjsonResponse(body, status_code=status, headers=headers)


#: The error responses every route may give, for the OpenAPI document.
def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS.get(s, "error")} for s in statuses}


_DESCRIPTIONS = {
    400: "malformed request",
    401: "missing or unknown API key",
    403: "this key may not do that",
    404: "not found (or not yours)",
    409: "conflict",
    413: "request body too large",
    415: "unsupported media type",
    422: "invalid request",
    429: "rejected by the quota",
    503: "a backing service is unavailable",
}

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "service_unavailable",
}


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


def validation_details(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Field errors without the offending input (it may be a large or private prompt)."""
    out = []
    for e in errors[:20]:
        if isinstance(e, Mapping):
            out.append(
                {
                    "field": _location(e.get("loc", ())),
                    "message": str(e.get("msg", "invalid")),
                    "type": str(e.get("type", "value_error")),
                }
            )
    return out


def validation_response(errors: Sequence[Any]) -> OrjsonResponse:
    """The 400 (not JSON) or 422 (invalid fields) for pydantic's errors."""
    fields = validation_details(errors)
    if any(f["type"] == "json_invalid" for f in fields):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    first = fields[0] if fields else {"field": "", "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return error_response(422, "invalid_request", f"{where}{first['message']}", {"fields": fields})


async def _validation(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


async def _http(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers=headers)


#: Failures of the services behind the API (not of the client): a 503.
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisError,
    psycopg.Error,
    PoolTimeout,
    LogError,
    ConnectionError,
    TimeoutError,
)


def response_for(exc: Exception, method: str, path: str) -> OrjsonResponse:
    """The error answer for an exception raised while handling ``method path``."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, UNAVAILABLE):
        log.warning("%s %s: a backing service failed: %r", method, path, exc)
        return error_response(
            503,
            "service_unavailable",
            "a backing service is unavailable; retry later",
            headers={"Retry-After": "1"},
        )
    log.error("%s %s failed: %r", method, path, exc, exc_info=exc)
    return error_response(500, "internal", "internal error")


async def _handled(request: Request, exc: Exception) -> OrjsonResponse:
    return response_for(exc, request.method, request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    kinds: tuple[type[Exception], ...] = (ApiError, *UNAVAILABLE, Exception)
    for kind in kinds:
        app.add_exception_handler(kind, _handled)
