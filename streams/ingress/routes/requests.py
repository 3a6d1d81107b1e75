"""``POST /v1/requests`` (submit, wait for the quota decision) and ``GET /v1/requests/{id}``."""

from __future__ import annotations

import math
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

from events import InferenceRequested, derive_id, new_id
from projections.billing.queries import RequestRecord
from projections.billing.queries import request as billing_request
from quotaflow.tokens import ContextOverflowError, Estimate, UnknownModelError, estimate
from streams.ingress.auth import not_found
from streams.ingress.deps import CallerDep, ServicesDep, TenantDep
from streams.ingress.errors import ApiError, responses
from streams.ingress.idempotency import Marker, fingerprint, request_id_for
from streams.ingress.metrics import APPEND_SECONDS, DECISION_SECONDS
from streams.ingress.schemas import InferenceRequestBody, RequestAccepted, RequestView, TokenCounts
from streams.ingress.services import Services
from streams.ingress.waiter import Decision

router = APIRouter(prefix="/v1/requests", tags=["requests"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[!-~]{1,200}$",
        description="retries with the same key return the same request and append nothing",
    ),
]
_QUOTA_REASONS = frozenset(("budget", "tpm", "rpm", "concurrency"))


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


@router.post(
    "",
    status_code=202,
    response_model=RequestAccepted,
    responses=responses(400, 401, 403, 409, 413, 422, 429, 503),
    summary="Submit an inference request and wait (bounded) for its quota decision",
)
async def submit(
    body: InferenceRequestBody,
    tenant: TenantDep,
    svc: ServicesDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RequestAccepted:
    est = _estimate(body, svc.settings.max_prompt_chars)
    spec = body.spec()
    if idempotency_key is None:
        rid = new_id()
        event_id = new_id()
    else:
        rid = request_id_for(tenant, idempotency_key)
        event_id = derive_id(rid, "requested")
        marker = await svc.idempotency.get(tenant, idempotency_key)
        if marker is not None:
            if marker.fingerprint != fingerprint(spec):
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request body",
                )
            decision = await _earlier_decision(svc, marker.request_id)
            return _answer(response, uuid.UUID(marker.request_id), est, decision, replayed=True)
    event = InferenceRequested(
        event_id=event_id,
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
        await svc.requests.send(event)
        appended = time.perf_counter()
        APPEND_SECONDS.observe(appended - started)
        if idempotency_key is not None:
            await svc.idempotency.put(tenant, idempotency_key, Marker(key, fingerprint(spec)))
        decision = await svc.waiter.wait(future, svc.settings.decision_timeout_s)
        outcome = "timeout" if decision is None else decision.status
        DECISION_SECONDS.labels(outcome).observe(time.perf_counter() - started)
    finally:
        svc.waiter.forget(key)
    return _answer(response, rid, est, decision, replayed=False)


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
    response: Response,
    rid: uuid.UUID,
    est: Estimate,
    decision: Decision | None,
    *,
    replayed: bool,
) -> RequestAccepted:
    response.headers["Location"] = f"/v1/requests/{rid}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if decision is not None and decision.status == "rejected":
        raise _rejection(rid, decision, replayed)
    return RequestAccepted(
        request_id=rid,
        status="pending" if decision is None else "reserved",
        reserved_tokens=None if decision is None else decision.tokens,
        estimated_prompt_tokens=est.prompt_tokens,
        estimated_tokens=est.total,
        replayed=replayed,
    )


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


@router.get(
    "/{request_id}",
    response_model=RequestView,
    responses=responses(401, 404, 422, 503),
    summary="A request's status, its tokens (estimated, reserved, actual) and its text",
)
async def get_request(request_id: uuid.UUID, caller: CallerDep, svc: ServicesDep) -> RequestView:
    record = await billing_request(svc.pool, request_id, schema=svc.settings.billing_schema)
    if record is None or not caller.may_read(record.tenant_id):
        decision = svc.waiter.recent(str(request_id))
        if record is None and decision is not None and caller.may_read(decision.tenant_id):
            return _view_of_decision(request_id, decision)
        raise not_found("request")
    text = None
    if record.completed_at is not None:
        result = await svc.results.get(str(request_id))
        text = None if result is None else result.text
    return _view(record, text)


def _counts(prompt: int | None, completion: int | None) -> TokenCounts | None:
    if prompt is None or completion is None:
        return None
    return TokenCounts(prompt=prompt, completion=completion, total=prompt + completion)


def _view(r: RequestRecord, text: str | None) -> RequestView:
    return RequestView(
        request_id=r.request_id,
        tenant_id=r.tenant_id,
        status=r.status,
        model=r.model,
        text=text,
        estimated_prompt_tokens=r.estimated_prompt_tokens,
        max_tokens=r.max_tokens,
        estimated_tokens=r.estimated_tokens,
        reserved_tokens=r.reserved_tokens,
        actual_tokens=_counts(r.prompt_tokens, r.completion_tokens),
        charged_tokens=_counts(r.settled_prompt_tokens, r.settled_completion_tokens),
        reject_reason=r.reject_reason,
        reject_detail=r.reject_detail,
        retry_after_s=r.retry_after_s,
        failure_reason=r.failure_reason,
        requested_at=r.requested_at,
        reserved_at=r.reserved_at,
        rejected_at=r.rejected_at,
        completed_at=r.completed_at,
        settled_at=r.settled_at,
    )


def _view_of_decision(request_id: uuid.UUID, d: Decision) -> RequestView:
    """What is known before the billing view has the request: its quota decision."""
    return RequestView(
        request_id=request_id,
        tenant_id=d.tenant_id,
        status=d.status,
        model=None,
        estimated_prompt_tokens=None,
        max_tokens=None,
        estimated_tokens=None,
        reserved_tokens=d.tokens if d.status == "reserved" else None,
        reject_reason=d.reason,
        reject_detail=d.detail or None,
        retry_after_s=d.retry_after_s,
    )
