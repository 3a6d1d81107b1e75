"""The tenant directory in Redis: which tenant an API key belongs to, and each tenant's name and
policy, as TenantRegistered and QuotaPolicySet on the ``requests`` topic say.

API keys are never stored: TenantRegistered carries only ``sha256(key)`` (hex), and that is
the directory's key. A later TenantRegistered of the same tenant replaces its key (rotation):
the old hash stops resolving.

A batch of one stream's events and that stream's position are applied by one Lua script,
atomically: the script skips every event at or below the stored position, and an event id it
has applied already (a duplicated append) is skipped too, so re-applying a batch, or an
overlapping one, changes nothing. The batch's last offset moves the position even when the
batch holds no directory event, so a restart does not re-read a partition's requests.

Keys (``prefix`` is configurable, e.g. a test's own prefix; everything lives under
``{prefix}dir:``):

* ``{prefix}dir:pos`` hash stream -> last applied offset
* ``{prefix}dir:keys`` hash key hash -> tenant id
* ``{prefix}dir:tenants`` set of registered tenant ids
* ``{prefix}dir:t:{tenant}`` hash name, key, policy (JSON), registered_at, updated_at
* ``{prefix}dir:e:{tenant}`` set of applied event ids (duplicates are skipped)
* ``{prefix}dir:ready`` hash stream -> 1 once the agent has caught up with that stream
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from events import Event, QuotaPolicy, QuotaPolicySet, TenantRegistered
from projections.view_guard import Floors

_APPLY = """
local P = ARGV[1]
local stream = ARGV[2]
local last = tonumber(ARGV[3])
local POS = P .. 'pos'
local pos = tonumber(redis.call('HGET', POS, stream) or '-1')
local floor = tonumber(ARGV[5] or '-1')
if floor >= 0 and pos < floor then return -1 end
local applied = 0
for _, f in ipairs(cjson.decode(ARGV[4])) do
  if f[2] > pos then
    local tid = f[3]
    if redis.call('SADD', P .. 'e:' .. tid, f[4]) == 1 then
      applied = applied + 1
      local tk = P .. 't:' .. tid
      if f[1] == 'T' then
        local old = redis.call('HGET', tk, 'key')
        if old and old ~= f[7] and redis.call('HGET', P .. 'keys', old) == tid then
          redis.call('HDEL', P .. 'keys', old)
        end
        if redis.call('HEXISTS', tk, 'registered_at') == 0 then
          redis.call('HSET', tk, 'registered_at', f[5])
        end
        redis.call('HSET', tk, 'name', f[6], 'key', f[7], 'policy', f[8], 'updated_at', f[5])
        redis.call('HSET', P .. 'keys', f[7], tid)
        redis.call('SADD', P .. 'tenants', tid)
      else
        redis.call('HSET', tk, 'policy', f[6], 'updated_at', f[5])
      end
    end
  end
end
if last > pos then redis.call('HSET', POS, stream, ARGV[3]) end
if ARGV[6] == '1' then redis.call('HSET', P .. 'ready', stream, 1) end
return applied
"""

# Flag a stream caught up only while its data is there (or it has none): never on a lost store.
_CAUGHT_UP = """
if ARGV[3] == '1' or redis.call('HEXISTS', ARGV[1] .. 'pos', ARGV[2]) == 1 then
  redis.call('HSET', ARGV[1] .. 'ready', ARGV[2], 1)
end
"""


@dataclass(frozen=True, slots=True)
class TenantEntry:
    tenant_id: str
    name: str
    policy: QuotaPolicy
    registered_at: datetime
    updated_at: datetime


def encode(offset: int, event: Event) -> list[str | int] | None:
    """The script's row for one event; ``None`` for events the directory does not hold."""
    at = event.occurred_at.isoformat()
    if isinstance(event, TenantRegistered):
        policy = event.policy.model_dump_json()
        tid, eid = event.tenant_id, str(event.event_id)
        return ["T", offset, tid, eid, at, event.name, event.api_key_hash, policy]
    if isinstance(event, QuotaPolicySet):
        policy = event.policy.model_dump_json()
        return ["P", offset, event.tenant_id, str(event.event_id), at, policy]
    return None


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TenantDirectory:
    def __init__(self, redis: Redis, prefix: str = "qf:") -> None:
        self._redis = redis
        self._prefix = prefix + "dir:"
        self._script = redis.register_script(_APPLY)
        self._caught_up = redis.register_script(_CAUGHT_UP)
        self._floors = Floors()

    async def apply(
        self,
        stream: str,
        items: Sequence[tuple[int, Event]],
        last: int | None = None,
        *,
        caught_up: bool = False,
    ) -> int:
        """Apply ``(offset, event)`` pairs of ``stream`` (offsets increasing) and move the
        stream's position to ``last`` (default: the last item's offset); how many tenant events
        changed the directory (not those at or below the position, nor duplicates)."""
        for (a, _), (b, _) in itertools.pairwise(items):
            if b <= a:
                raise ValueError(f"offsets must increase: {a} then {b}")
        end = last if last is not None else (items[-1][0] if items else -1)
        if items and end < items[-1][0]:
            raise ValueError("last must not be below the last item's offset")
        if end < 0:
            return 0
        rows = [row for offset, event in items if (row := encode(offset, event)) is not None]
        floor = str(self._floors.floor(stream))
        flag = "1" if caught_up else "0"  # and flag the stream caught up, in the same script
        args: list[str | bytes] = [self._prefix, stream, str(end), orjson.dumps(rows), floor, flag]
        return self._floors.applied(stream, int(await self._script(args=args)), end)

    async def positions(self, streams: Sequence[str]) -> dict[str, int]:
        """The last applied offset of each stream, -1 where none was."""
        if not streams:
            return {}
        values = await self._redis.hmget(self._prefix + "pos", list(streams))
        out = {s: -1 if v is None else int(v) for s, v in zip(streams, values, strict=True)}
        self._floors.loaded(out)
        return out

    async def caught_up(self, stream: str, *, empty: bool = False) -> None:
        """The directory holds ``stream``'s tenant events up to its recent tail: flagged only if
        its position is stored (or the stream is ``empty``), so a lost store is never flagged.
        A rebuild flags it through :meth:`apply`. See :meth:`complete`."""
        await self._caught_up(args=[self._prefix, stream, "1" if empty else "0"])

    async def rebuilding(self, stream: str) -> None:
        """``stream`` is read again from its start: not caught up until :meth:`apply` says."""
        await self._redis.hdel(self._prefix + "ready", stream)

    async def complete(self, streams: int) -> bool:
        """Whether every one of the ``streams`` partitions has caught up: false before the
        agent first read them, and after the store was lost until each is rebuilt (the flag
        goes with the store). An unknown key is only surely unknown when this holds."""
        return int(await self._redis.hlen(self._prefix + "ready")) >= streams

    async def tenant_for_key(self, key_hash: str) -> str | None:
        """The tenant whose current API key has this sha256 hex digest."""
        value = await self._redis.hget(self._prefix + "keys", key_hash)
        return None if value is None else _str(value)

    async def tenant(self, tenant_id: str) -> TenantEntry | None:
        """A registered tenant (``None`` if no TenantRegistered of it was applied)."""
        raw = await self._redis.hgetall(f"{self._prefix}t:{tenant_id}")
        return _entry(tenant_id, {_str(k): _str(v) for k, v in raw.items()})

    async def tenants(self) -> list[TenantEntry]:
        ids = sorted(_str(m) for m in await self._redis.smembers(self._prefix + "tenants"))
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(f"{self._prefix}t:{tid}")
            found = await pipe.execute()
        out = []
        for tid, raw in zip(ids, found, strict=True):
            entry = _entry(tid, {_str(k): _str(v) for k, v in raw.items()})
            if entry is not None:
                out.append(entry)
        return out

    async def clear(self) -> None:
        """Delete this directory (only keys under its own prefix)."""
        self._floors = Floors()
        p = self._prefix
        ids = [_str(m) for m in await self._redis.smembers(p + "tenants")]
        keys = [p + "pos", p + "keys", p + "tenants", p + "ready"]
        for tid in ids:
            keys += (f"{p}t:{tid}", f"{p}e:{tid}")
        async for key in self._redis.scan_iter(match=f"{p}[te]:*", count=500):
            keys.append(_str(key))
        for start in range(0, len(keys), 500):
            await self._redis.unlink(*keys[start : start + 500])


def _entry(tenant_id: str, raw: dict[str, str]) -> TenantEntry | None:
    if "key" not in raw:
        return None
    return TenantEntry(
        tenant_id=tenant_id,
        name=raw["name"],
        policy=QuotaPolicy.model_validate_json(raw["policy"]),
        registered_at=datetime.fromisoformat(raw["registered_at"]),
        updated_at=datetime.fromisoformat(raw["updated_at"]),
    )
