"""A small client of quotaflow's HTTP API, for the CLI, the demo and the chaos harness."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx


class ApiFailure(Exception):
    """The API answered with an error body (or not at all)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}" if status else message)
        self.status = status
        self.code = code


def _check(r: httpx.Response) -> dict[str, Any]:
    if r.is_success:
        body: dict[str, Any] = r.json()
        return body
    try:
        err = r.json()["error"]
        raise ApiFailure(r.status_code, str(err.get("code")), str(err.get("message")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ApiFailure(r.status_code, "http_error", r.text[:200]) from None


@dataclass
class AdminApi:
    """The admin routes, with the admin key (``QUOTAFLOW_ADMIN_KEY``)."""

    client: httpx.AsyncClient
    admin_key: str

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def create_tenant(
        self, tenant_id: str, name: str, policy: dict[str, Any]
    ) -> dict[str, Any]:
        """Register a tenant; the answer holds its API key (shown once)."""
        body = {"tenant_id": tenant_id, "name": name, "policy": policy}
        return _check(await self.client.post("/v1/admin/tenants", json=body, headers=self._headers))

    async def set_policy(self, tenant_id: str, policy: dict[str, Any]) -> dict[str, Any]:
        return _check(
            await self.client.put(
                f"/v1/admin/tenants/{tenant_id}/policy", json=policy, headers=self._headers
            )
        )

    async def tenants(self) -> list[dict[str, Any]]:
        body = _check(await self.client.get("/v1/admin/tenants", headers=self._headers))
        tenants: list[dict[str, Any]] = body["tenants"]
        return tenants

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        return _check(
            await self.client.get(f"/v1/admin/tenants/{tenant_id}", headers=self._headers)
        )

    async def set_price(
        self, model: str, prompt_per_1k: Decimal, completion_per_1k: Decimal, currency: str = "USD"
    ) -> dict[str, Any]:
        body = {
            "prompt_per_1k": str(prompt_per_1k),
            "completion_per_1k": str(completion_per_1k),
            "currency": currency,
        }
        return _check(
            await self.client.put(f"/v1/admin/prices/{model}", json=body, headers=self._headers)
        )


@dataclass
class TenantApi:
    """A tenant's routes, with its key."""

    client: httpx.AsyncClient
    tenant_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def submit(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> httpx.Response:
        """POST /v1/requests; the raw response (202, 429 and 4xx are all answers)."""
        headers = self.headers
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        return await self.client.post("/v1/requests", json=body, headers=headers)

    async def request(self, request_id: str) -> dict[str, Any]:
        return _check(await self.client.get(f"/v1/requests/{request_id}", headers=self.headers))

    async def quota(self) -> dict[str, Any]:
        return _check(
            await self.client.get(f"/v1/tenants/{self.tenant_id}/quota", headers=self.headers)
        )

    async def usage(self, start: str, end: str, group_by: str = "model") -> dict[str, Any]:
        params = {"from": start, "to": end, "group_by": group_by}
        return _check(
            await self.client.get(
                f"/v1/tenants/{self.tenant_id}/usage", params=params, headers=self.headers
            )
        )

    async def invoice(self, period: str) -> dict[str, Any]:
        return _check(
            await self.client.get(
                f"/v1/tenants/{self.tenant_id}/invoices/{period}", headers=self.headers
            )
        )
