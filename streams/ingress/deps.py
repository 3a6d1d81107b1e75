"""FastAPI dependencies: the process's services and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streams.ingress.auth import Principal
from streams.ingress.errors import ApiError
from streams.ingress.services import Services

_bearer = HTTPBearer(
    auto_error=False,
    description="a tenant's API key (tenant routes) or the admin key (admin routes)",
)


async def services(request: Request) -> Services:
    found: Services | None = getattr(request.app.state, "services", None)
    if found is None:
        raise ApiError(503, "service_unavailable", "the API is starting or stopping")
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def principal(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await svc.auth.principal(credentials.credentials if credentials else None)


CallerDep = Annotated[Principal, Depends(principal)]


async def tenant_caller(caller: CallerDep) -> str:
    """The tenant a tenant key belongs to (the admin key cannot act as a tenant)."""
    if caller.tenant_id is None:
        raise ApiError(403, "forbidden", "this route needs a tenant's API key")
    return caller.tenant_id


async def admin_caller(caller: CallerDep) -> Principal:
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "this route needs the admin key")
    return caller


TenantDep = Annotated[str, Depends(tenant_caller)]
AdminDep = Annotated[Principal, Depends(admin_caller)]
