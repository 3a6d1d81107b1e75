"""Submitting a request: estimate, append, wait (bounded) for the quota decision, answer.

Shared by the FastAPI route (documentation, and the fallback) and the fast path
(:mod:`streams.ingress.fastpath`) that serves ``POST /v1/requests`` in production.
"""

from __future__ import annotations

import math
import time
import uuid

from fastapi import Response

from events import InferenceRequested, derive_id, new_id
from projections.billing.queries import RequestRecord
from projections.billing.queries import request as billing_request
from quotaflow.tokens import ContextOverflowError, Estimate, UnknownModelError, estimate
from streams.ingress.errors import ApiError, OrjsonResponse
from streams.ingress.idempotency import Marker, fingerprint, request_id_for
from streams.ingress.metrics import APPEND_SECONDS, DECISION_SECONDS
from streams.ingress.schemas import InferenceRequestBody
from streams.ingress.services import Services
from streams.ingress.waiter import Decision

_QUOTA_REASONS = frozenset(("budget", "tpm", "rpm", "concurrency"))


async def submit(
    svc: Services, tenant: str, body: InferenceRequestBody, idempotency_key: str | None
) -> Response:
    """The 202 answer, or an :class:`ApiError` (429 when the quota rejects the request)."""
    est = _estimate(body, svc.settings.max_prompt_chars)
    spec = body.spec()
    if idempotency_key is None:
        rid = new_id()
    else:
        rid = request_id_for(tenant, idempotency_key)
        marker = await svc.idempotency.get(tenant, idempotency_key)
        if marker is not None:
            if marker.fingerprint != fingerprint(spec):
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request body",
                )
            decision = await _earlier_decision(svc, marker.request_id)
            return _answer(uuid.UUID(marker.request_id), est, decision, replayed=True)
    event = InferenceRequested(
        event_id=derive_id(rid, "requested"),
        tenant_id=tenant,
        correlation_id=rid,
        request_id=rid,
        spec=spec,
        estimated_prompt_tokens=est.prompt_tokens,
        idempotency_key=idempotency_key,
    )
    key = str(rid)
    future = svc.waiter.expect(key)
    try:
        started = time.perf_counter()
        await svc.appender.append(svc.topology.requests, event)
        appended = time.perf_counter()
        APPEND_SECONDS.observe(appended - started)
        if idempotency_key is not None:
            await svc.idempotency.put(tenant, idempotency_key, Marker(key, fingerprint(spec)))
        decision = await svc.waiter.wait(future, svc.settings.decision_timeout_s)
        outcome = "timeout" if decision is None else decision.status
        DECISION_SECONDS.labels(outcome).observe(time.perf_counter() - started)
    finally:
        svc.waiter.forget(key)
    return _answer(rid, est, decision, replayed=False)


async def _earlier_decision(svc: Services, request_id: str) -> Decision | None:
    """The decision of a request appended by an earlier attempt (any replica)."""
    known = svc.waiter.recent(request_id)
    if known is not None:
        return known
    future = svc.waiter.expect(request_id)
    try:
        if future.done():
            return future.result()
        record = await billing_request(
            svc.pool, uuid.UUID(request_id), schema=svc.settings.billing_schema
        )
        from_view = None if record is None else _decision_of(record)
        if from_view is not None:
            return from_view
        return await svc.waiter.wait(future, svc.settings.decision_timeout_s)
    finally:
        svc.waiter.forget(request_id)


def _decision_of(record: RequestRecord) -> Decision | None:
    rid = str(record.request_id)
    if record.rejected_at is not None:
        return Decision(
            rid,
            record.tenant_id,
            "rejected",
            record.rejected_tokens or 0,
            record.reject_reason,
            record.reject_detail or "",
            record.retry_after_s,
        )
    if record.reserved_at is not None:
        return Decision(rid, record.tenant_id, "reserved", record.reserved_tokens or 0)
    return None


def _answer(
    rid: uuid.UUID, est: Estimate, decision: Decision | None, *, replayed: bool
) -> Response:
    """The 202 (a :class:`RequestAccepted`, serialized here: this is the hot path), or the
    rejection raised as an error."""
    if decision is not None and decision.status == "rejected":
        raise _rejection(rid, decision, replayed)
    headers = {"Location": f"/v1/requests/{rid}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = {
        "request_id": str(rid),
        "status": "pending" if decision is None else "reserved",
        "reserved_tokens": None if decision is None else decision.tokens,
        "estimated_prompt_tokens": est.prompt_tokens,
        "estimated_tokens": est.total,
        "replayed": replayed,
    }
    return OrjsonResponse(body, status_code=202, headers=headers)


def _rejection(rid: uuid.UUID, decision: Decision, replayed: bool) -> ApiError:
    reason = decision.reason or "rejected"
    details = {
        "request_id": str(rid),
        "status": "rejected",
        "reason": reason,
        "retry_after_s": decision.retry_after_s,
        "requested_tokens": decision.tokens,
        "replayed": replayed,
    }
    message = f"rejected by the quota ({reason})" + (
        f": {decision.detail}" if decision.detail else ""
    )
    headers = {"Location": f"/v1/requests/{rid}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if reason in _QUOTA_REASONS:
        if decision.retry_after_s is not None:
            headers["Retry-After"] = str(max(0, math.ceil(decision.retry_after_s)))
        return ApiError(429, "quota_exceeded", message, details, headers)
    if reason == "unknown_tenant":
        return ApiError(403, "unknown_tenant", message, details, headers)
    return ApiError(422, "request_rejected", message, details, headers)


def _estimate(body: InferenceRequestBody, max_chars: int) -> Estimate:
    chars = body.prompt_chars()
    if chars > max_chars:
        raise ApiError(
            413, "prompt_too_large", f"the prompt has {chars} characters; at most {max_chars}"
        )
    messages = None if body.messages is None else [m.model_dump() for m in body.messages]
    try:
        return estimate(body.model, body.prompt, messages, body.max_tokens)
    except UnknownModelError as exc:
        raise ApiError(422, "unknown_model", str(exc)) from None
    except ContextOverflowError as exc:
        raise ApiError(422, "context_overflow", str(exc)) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
