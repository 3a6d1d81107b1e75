"""``Idempotency-Key``: a retried request returns the same request and appends nothing new.

* The request id is derived from the tenant and the key (:func:`request_id_for`), so every
  attempt with the same key names the same request; the event id is derived from the request
  id too.
* After the InferenceRequested is appended (confirmed), a marker is stored in Redis under
  ``{prefix}idem:{tenant}:{sha256(key)}`` with the request id and a fingerprint of the body,
  for ``idempotency_ttl_s``. A retry that finds the marker appends nothing and answers from the
  decision (the waiter's cache, the billing view, or by waiting for it); a retry with another
  body under the same key is a 409.
* The race: two first attempts at the same moment both find no marker and both append. The
  two records carry the same request id, and the quota agent decides a request id once (a
  second InferenceRequested with a known request id gets no decision), so both attempts get
  the one decision; the log holds one extra record, which the billing view also folds away
  (first event of a type wins). An append that fails leaves no marker: the retry appends again,
  and if the failed attempt did reach the log, the same de-duplication applies.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from events.model import RequestSpec

#: Namespace of request ids derived from idempotency keys. Never change it.
NAMESPACE = uuid.UUID("0f9d7c36-5a0e-4b8e-9c77-3d1f6a2b8e41")


def request_id_for(tenant_id: str, key: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{tenant_id}\x00{key}")


def fingerprint(spec: RequestSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Marker:
    request_id: str
    fingerprint: str


class IdempotencyStore:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix + "idem:"
        self._ttl = ttl_s

    def _key(self, tenant_id: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._prefix}{tenant_id}:{digest}"

    async def get(self, tenant_id: str, key: str) -> Marker | None:
        raw = await self._redis.get(self._key(tenant_id, key))
        if raw is None:
            return None
        d = orjson.loads(raw)
        return Marker(str(d["request_id"]), str(d["fingerprint"]))

    async def put(self, tenant_id: str, key: str, marker: Marker) -> None:
        value = orjson.dumps({"request_id": marker.request_id, "fingerprint": marker.fingerprint})
        await self._redis.set(self._key(tenant_id, key), value, ex=self._ttl, nx=True)
