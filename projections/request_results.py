"""Completed requests' texts in Redis, for ``GET /v1/requests/{id}``, kept for a while (TTL).

The billing view keeps each request's lifecycle and token counts but not the generated text;
this small projection keeps the text of each InferenceCompleted (first one wins, as in the
billing view) for ``ttl_s`` seconds after it was applied.

A batch of one stream's events and that stream's position are applied by one Lua script,
atomically: events at or below the stored position are skipped and a result that exists is
never overwritten, so re-applying a batch changes nothing. (A rebuild from the first offset
brings back texts whose TTL had run out, with a fresh TTL: this is a cache-like view.)

Keys (under ``{prefix}res:``):

* ``{prefix}res:pos`` hash stream -> last applied offset
* ``{prefix}res:r:{request_id}`` JSON: tenant_id, model, text, prompt/completion tokens,
  completed_at
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from redis.asyncio import Redis

from events import Event, InferenceCompleted
from projections.view_guard import Floors

DEFAULT_TTL_S = 7 * 24 * 3600

_APPLY = """
local P = ARGV[1]
local stream = ARGV[2]
local last = tonumber(ARGV[3])
local ttl = ARGV[4]
local POS = P .. 'pos'
local pos = tonumber(redis.call('HGET', POS, stream) or '-1')
local floor = tonumber(ARGV[6] or '-1')
if floor >= 0 and pos < floor then return -1 end
local applied = 0
for _, f in ipairs(cjson.decode(ARGV[5])) do
  if f[1] > pos then
    applied = applied + 1
    redis.call('SET', P .. 'r:' .. f[2], f[3], 'NX', 'EX', ttl)
  end
end
if last > pos then redis.call('HSET', POS, stream, ARGV[3]) end
return applied
"""


@dataclass(frozen=True, slots=True)
class RequestResult:
    request_id: str
    tenant_id: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    completed_at: datetime


def encode(offset: int, event: Event) -> list[str | int] | None:
    if not isinstance(event, InferenceCompleted):
        return None
    value = orjson.dumps(
        {
            "tenant_id": event.tenant_id,
            "model": event.model,
            "text": event.text,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "completed_at": event.occurred_at.isoformat(),
        }
    ).decode()
    return [offset, str(event.request_id), value]


class RequestResults:
    def __init__(self, redis: Redis, prefix: str = "qf:", ttl_s: int = DEFAULT_TTL_S) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be >= 1")
        self._redis = redis
        self._prefix = prefix + "res:"
        self._ttl = ttl_s
        self._script = redis.register_script(_APPLY)
        self._floors = Floors()

    async def apply(
        self, stream: str, items: Sequence[tuple[int, Event]], last: int | None = None
    ) -> int:
        """Apply ``(offset, event)`` pairs of ``stream`` (offsets increasing) and move the
        stream's position to ``last`` (default: the last item's offset)."""
        for (a, _), (b, _) in itertools.pairwise(items):
            if b <= a:
                raise ValueError(f"offsets must increase: {a} then {b}")
        end = last if last is not None else (items[-1][0] if items else -1)
        if end < 0:
            return 0
        rows = [row for offset, event in items if (row := encode(offset, event)) is not None]
        args: list[str | bytes] = [
            self._prefix,
            stream,
            str(end),
            str(self._ttl),
            orjson.dumps(rows),
            str(self._floors.floor(stream)),
        ]
        return self._floors.applied(stream, int(await self._script(args=args)), end)

    async def positions(self, streams: Sequence[str]) -> dict[str, int]:
        if not streams:
            return {}
        values = await self._redis.hmget(self._prefix + "pos", list(streams))
        out = {s: -1 if v is None else int(v) for s, v in zip(streams, values, strict=True)}
        self._floors.loaded(out)
        return out

    async def get(self, request_id: str) -> RequestResult | None:
        raw = await self._redis.get(f"{self._prefix}r:{request_id}")
        if raw is None:
            return None
        d = orjson.loads(raw)
        return RequestResult(
            request_id=request_id,
            tenant_id=str(d["tenant_id"]),
            model=str(d["model"]),
            text=str(d["text"]),
            prompt_tokens=int(d["prompt_tokens"]),
            completion_tokens=int(d["completion_tokens"]),
            completed_at=datetime.fromisoformat(d["completed_at"]),
        )

    async def clear(self) -> None:
        self._floors = Floors()
        keys = [self._prefix + "pos"]
        async for key in self._redis.scan_iter(match=f"{self._prefix}r:*", count=500):
            keys.append(key.decode() if isinstance(key, bytes) else str(key))
        for start in range(0, len(keys), 500):
            await self._redis.unlink(*keys[start : start + 500])
