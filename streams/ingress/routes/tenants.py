"""A tenant's views: its quota (Redis), usage and invoices (the PostgreSQL billing view)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from projections.billing.queries import Invoice, Usage, invoice, usage
from streams.ingress.auth import Principal, not_found
from streams.ingress.deps import CallerDep, ServicesDep
from streams.ingress.errors import ApiError, responses
from streams.ingress.schemas import QuotaOut

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])

TenantPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="the tenant id",
    ),
]
_PERIOD = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
_MAX_DAYS = 3_700


def _own(caller: Principal, tenant: str) -> None:
    if not caller.may_read(tenant):
        raise not_found()


@router.get(
    "/{tenant}/quota",
    response_model=QuotaOut,
    responses=responses(401, 404, 422, 503),
    summary="The tenant's quota now: budget, used, reserved, remaining, rate windows",
)
async def quota(tenant: TenantPath, caller: CallerDep, svc: ServicesDep) -> QuotaOut:
    _own(caller, tenant)
    view = await svc.quota.tenant(tenant)
    if view is None:
        raise not_found()
    return QuotaOut.model_validate(dataclasses.asdict(view))


@router.get(
    "/{tenant}/usage",
    response_model=Usage,
    responses=responses(401, 404, 422, 503),
    summary="Settled usage on the UTC days from <= day < to, per day or per model",
)
async def tenant_usage(
    tenant: TenantPath,
    caller: CallerDep,
    svc: ServicesDep,
    start: Annotated[
        date | None, Query(alias="from", description="first day (default: this month's first)")
    ] = None,
    end: Annotated[
        date | None, Query(alias="to", description="day after the last (default: tomorrow)")
    ] = None,
    group_by: Literal["day", "model"] = "day",
) -> Usage:
    _own(caller, tenant)
    today = datetime.now(UTC).date()
    first = start if start is not None else today.replace(day=1)
    last = end if end is not None else today + timedelta(days=1)
    if last <= first:
        raise ApiError(422, "invalid_request", "'to' must be after 'from'")
    if (last - first).days > _MAX_DAYS:
        raise ApiError(422, "invalid_request", f"at most {_MAX_DAYS} days at once")
    return await usage(svc.pool, tenant, first, last, group_by, schema=svc.settings.billing_schema)


@router.get(
    "/{tenant}/invoices/{period}",
    response_model=Invoice,
    responses=responses(401, 404, 409, 422, 503),
    summary="The invoice of a calendar month (UTC), e.g. 2026-11",
)
async def tenant_invoice(
    tenant: TenantPath,
    period: Annotated[str, Path(description="YYYY-MM (or any day of the month, YYYY-MM-DD)")],
    caller: CallerDep,
    svc: ServicesDep,
) -> Invoice:
    _own(caller, tenant)
    month = _parse_period(period)
    try:
        return await invoice(svc.pool, tenant, month, schema=svc.settings.billing_schema)
    except ValueError as exc:  # usage priced in several currencies
        raise ApiError(409, "conflict", str(exc)) from None


def _parse_period(period: str) -> date:
    match = _PERIOD.match(period)
    if match is None:
        raise ApiError(422, "invalid_request", "period must be YYYY-MM or YYYY-MM-DD")
    year, month, day = match.groups()
    if not 1970 <= int(year) <= 9998:
        raise ApiError(422, "invalid_request", "the year must be within 1970..9998")
    try:
        return date(int(year), int(month), int(day or 1))
    except ValueError:
        raise ApiError(422, "invalid_request", f"no such date: {period}") from None
