"""``POST /v1/requests`` (submit, wait for the quota decision) and ``GET /v1/requests/{id}``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

from projections.billing.queries import RequestRecord
from projections.billing.queries import request as billing_request
from streams.ingress import submit as submitting
from streams.ingress.auth import not_found
from streams.ingress.deps import CallerDep, ServicesDep, TenantDep
from streams.ingress.errors import responses
from streams.ingress.schemas import InferenceRequestBody, RequestAccepted, RequestView, TokenCounts
from streams.ingress.waiter import Decision

router = APIRouter(prefix="/v1/requests", tags=["requests"])

IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,200}$"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="retries with the same key return the same request and append nothing",
    ),
]


@router.post(
    "",
    status_code=202,
    response_model=RequestAccepted,
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    summary="Submit an inference request and wait (bounded) for its quota decision",
)
async def submit(
    body: InferenceRequestBody,
    tenant: TenantDep,
    svc: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Requests are served by the fast path (:mod:`streams.ingress.fastpath`) unless it is
    switched off (``QUOTAFLOW_FAST_PATH=false``); this route documents the operation and
    serves it then, through the same :func:`streams.ingress.submit.submit`."""
    return await submitting.submit(svc, tenant, body, idempotency_key)


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
