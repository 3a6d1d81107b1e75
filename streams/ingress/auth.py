"""Who is calling: ``Authorization: Bearer <key>``.

A tenant key is looked up by its sha256 in the tenant directory (keys are never stored or
logged, only hashed); the admin key is compared (in constant time) with ``settings.admin_key``.
A resolved tenant key is cached in process for ``auth_cache_s`` seconds, so a rotated key
keeps working on a replica for at most that long; an unknown key is never cached (a tenant
just created works at once).

Access rules: a tenant key sees only its own tenant (anything else is a 404, exactly as for a
tenant that does not exist); the admin key may read every tenant and is the only key for the
admin routes (a tenant key gets a 403 there).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from pydantic import SecretStr

from projections.tenant_directory import TenantDirectory
from streams.ingress.errors import ApiError

_CACHE_LIMIT = 100_000
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="quotaflow"'}


def hash_key(key: str) -> str:
    """The sha256 hex digest of an API key: what TenantRegistered and the directory hold."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant (``tenant_id``) or the admin (``tenant_id is None``)."""

    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def may_read(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


ADMIN = Principal(None)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_UNAUTHORIZED_HEADERS)


def not_found(what: str = "tenant") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


class Authenticator:
    def __init__(
        self, directory: TenantDirectory, admin_key: SecretStr, cache_s: float, partitions: int = 1
    ) -> None:
        self._directory = directory
        self._partitions = partitions
        self._admin_hash = hash_key(admin_key.get_secret_value()).encode()
        self._cache_s = cache_s
        self._cache: dict[str, tuple[str, float]] = {}

    async def principal(self, key: str | None) -> Principal:
        if not key:
            raise unauthorized("an API key is required: Authorization: Bearer <key>")
        digest = hash_key(key)
        if hmac.compare_digest(digest.encode(), self._admin_hash):
            return ADMIN
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return Principal(cached[0])
        tenant = await self._directory.tenant_for_key(digest)
        if tenant is None:
            self._cache.pop(digest, None)
            if not await self._directory.complete(self._partitions):
                raise ApiError(
                    503,
                    "directory_unavailable",
                    "the tenant directory is being rebuilt; retry shortly",
                    headers={"Retry-After": "1"},
                )
            raise unauthorized("unknown API key")
        if self._cache_s > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (tenant, now + self._cache_s)
        return Principal(tenant)
