"""Admin routes (the admin key only): tenants, their quota policies, model prices.

Every write appends an event (TenantRegistered, QuotaPolicySet to the tenant's ``requests``
partition; PriceSet to ``catalog``); the views follow from the log.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Path, Response

from events import PriceSet, QuotaPolicy, QuotaPolicySet, TenantRegistered
from events.model import SYSTEM_TENANT
from projections.tenant_directory import TenantEntry
from streams.ingress.auth import hash_key, not_found
from streams.ingress.deps import AdminDep, ServicesDep
from streams.ingress.errors import ApiError, responses
from streams.ingress.routes.tenants import TenantPath
from streams.ingress.schemas import (
    PolicyAccepted,
    PriceAccepted,
    PriceBody,
    TenantCreate,
    TenantCreated,
    TenantList,
    TenantOut,
)
from streams.ingress.services import Services

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_KEY_PREFIX = "qf_"
ModelPath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
]


def new_api_key() -> str:
    return _KEY_PREFIX + secrets.token_urlsafe(32)


@router.post(
    "/tenants",
    status_code=201,
    response_model=TenantCreated,
    responses=responses(400, 401, 403, 409, 413, 422, 503),
    summary="Register a tenant; its API key is returned once",
)
async def create_tenant(
    body: TenantCreate, _: AdminDep, svc: ServicesDep, response: Response
) -> TenantCreated:
    if body.tenant_id == SYSTEM_TENANT:
        raise ApiError(422, "invalid_request", f"{SYSTEM_TENANT!r} is reserved")
    if await svc.directory.tenant(body.tenant_id) is not None:
        raise ApiError(409, "conflict", f"tenant {body.tenant_id} exists")
    key = new_api_key()
    digest = hash_key(key)
    await svc.requests.send(
        TenantRegistered(
            tenant_id=body.tenant_id, name=body.name, api_key_hash=digest, policy=body.policy
        )
    )
    active = await _known(svc, digest, body.tenant_id, svc.settings.directory_timeout_s)
    response.headers["Location"] = f"/v1/admin/tenants/{body.tenant_id}"
    return TenantCreated(
        tenant_id=body.tenant_id, name=body.name, policy=body.policy, api_key=key, active=active
    )


async def _known(svc: Services, digest: str, tenant_id: str, timeout: float) -> bool:
    """Wait until the tenant directory resolves the key (bounded)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if await svc.directory.tenant_for_key(digest) == tenant_id:
            return True
        if time.monotonic() + delay > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


@router.get(
    "/tenants",
    response_model=TenantList,
    responses=responses(401, 403, 503),
    summary="Every registered tenant",
)
async def list_tenants(_: AdminDep, svc: ServicesDep) -> TenantList:
    return TenantList(tenants=[_out(e) for e in await svc.directory.tenants()])


@router.get(
    "/tenants/{tenant}",
    response_model=TenantOut,
    responses=responses(401, 403, 404, 422, 503),
    summary="One registered tenant",
)
async def get_tenant(tenant: TenantPath, _: AdminDep, svc: ServicesDep) -> TenantOut:
    entry = await svc.directory.tenant(tenant)
    if entry is None:
        raise not_found()
    return _out(entry)


def _out(entry: TenantEntry) -> TenantOut:
    return TenantOut(
        tenant_id=entry.tenant_id,
        name=entry.name,
        policy=entry.policy,
        registered_at=entry.registered_at,
        updated_at=entry.updated_at,
    )


@router.put(
    "/tenants/{tenant}/policy",
    status_code=202,
    response_model=PolicyAccepted,
    responses=responses(400, 401, 403, 404, 413, 422, 503),
    summary="Set a tenant's quota policy (appends QuotaPolicySet)",
)
async def set_policy(
    tenant: TenantPath, body: QuotaPolicy, _: AdminDep, svc: ServicesDep
) -> PolicyAccepted:
    if await svc.directory.tenant(tenant) is None:
        raise not_found()
    event = QuotaPolicySet(tenant_id=tenant, policy=body)
    await svc.requests.send(event)
    return PolicyAccepted(tenant_id=tenant, policy=body, event_id=event.event_id)


@router.put(
    "/prices/{model}",
    status_code=202,
    response_model=PriceAccepted,
    responses=responses(400, 401, 403, 413, 422, 503),
    summary="Set a model's price from now on (appends PriceSet to catalog)",
)
async def set_price(
    model: ModelPath, body: PriceBody, _: AdminDep, svc: ServicesDep
) -> PriceAccepted:
    event = PriceSet(
        tenant_id=SYSTEM_TENANT,
        model=model,
        prompt_per_1k=body.prompt_per_1k,
        completion_per_1k=body.completion_per_1k,
        currency=body.currency,
    )
    await svc.catalog.send(event)
    return PriceAccepted(
        model=model,
        prompt_per_1k=body.prompt_per_1k,
        completion_per_1k=body.completion_per_1k,
        currency=body.currency,
        event_id=event.event_id,
    )
