"""Rebuilding the Redis quota view into a scratch key prefix, and swapping it in.

A rebuild applies the log to a :class:`~projections.quota_view.QuotaView` under a scratch
prefix with the same Lua script the live agent uses, so the scratch view stores its stream
positions exactly as the live one does.

**The swap** (blue/green) is one Lua script (:data:`SWAP_LUA`), atomic with respect to the
live agent's own scripts: it compares the positions, and only when the scratch view is at or
past the live view in *every* stream the live view has a position for, it deletes the live
keys and renames every scratch key to its live name (``RENAME`` moves a key in O(1): the
view is a handful of hashes plus one window sorted set per tenant). The
live agent's next apply then reads the scratch view's positions and skips whatever it has
(the script skips events at or below the stored position), so the agent continues from where
the rebuild stopped and no event that arrived during the rebuild is lost or applied twice.
When the live view is ahead, nothing changes and the script says which streams lag; the
caller catches up (reads the log from the scratch positions to the tails) and tries again.

An operator need not stop the quota-view agents: the swap is safe while they run. Stopped
agents resume from the swapped-in positions when they start.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from events import ClockTicked
from projections.audit.logread import Chunk, type_filter
from projections.audit.rebuild import CatchUp, SwapResult
from projections.quota_view import QuotaView
from streams.agents.quota_view import INPUTS
from streams.topics import Topology

#: The names a view prefix is followed by (see projections.quota_view).
_KEY_KINDS = ("pos", "q", "r", "pe", "w", "tenants")
_TYPES = frozenset(str(cls.model_fields["type"].default) for cls in INPUTS)

#: An event the view's script ignores: appended to a chunk whose last records were filtered
#: out, so that the stream's position still moves to the end of the chunk.
POSITION_ONLY = ClockTicked(
    event_id=uuid.UUID(int=0),
    occurred_at=datetime(1970, 1, 1, tzinfo=UTC),
    tenant_id="system",
    partition=0,
)

SWAP_LUA = """
-- ARGV: live prefix, scratch prefix. Returns {1, tenants moved} or {0, {stream, live, scratch}...}
-- The view's keys (see projections.quota_view): pos, q, r, pe, and w:{tenant} per tenant.
local L, S = ARGV[1], ARGV[2]
local live = redis.call('HGETALL', L .. 'pos')
local lag = {}
for i = 1, #live, 2 do
  local mine = redis.call('HGET', S .. 'pos', live[i]) or '-1'
  if tonumber(mine) < tonumber(live[i + 1]) then
    lag[#lag + 1] = live[i]; lag[#lag + 1] = live[i + 1]; lag[#lag + 1] = mine
  end
end
if #lag > 0 then return {0, lag} end
for _, tid in ipairs(redis.call('HKEYS', L .. 'q')) do redis.call('UNLINK', L .. 'w:' .. tid) end
redis.call('UNLINK', L .. 'pos', L .. 'q', L .. 'r', L .. 'pe')
local tenants = redis.call('HKEYS', S .. 'q')
for _, tid in ipairs(tenants) do
  local key = S .. 'w:' .. tid
  if redis.call('EXISTS', key) == 1 then redis.call('RENAME', key, L .. 'w:' .. tid) end
end
for _, k in ipairs({'pos', 'q', 'r', 'pe'}) do
  if redis.call('EXISTS', S .. k) == 1 then redis.call('RENAME', S .. k, L .. k) end
end
return {1, #tenants}
"""


def check_prefixes(live: str, scratch: str) -> None:
    """Refuse a scratch prefix whose keys could be keys of the live view (or the reverse)."""
    if not scratch.endswith(":") or scratch == live:
        raise ValueError(f"scratch prefix {scratch!r} must end with ':' and differ from {live!r}")
    for a, b in ((live, scratch), (scratch, live)):
        if b.startswith(a) and b[len(a) :].split(":", 1)[0] in _KEY_KINDS:
            raise ValueError(f"keys under {scratch!r} and {live!r} would overlap")


def scratch_prefix(name: str) -> str:
    return name if name.endswith(":") else name + ":"


class QuotaTarget:
    """The Redis quota view under a scratch prefix, rebuilt from ``requests`` and ``quota``."""

    kind: str = "quota"
    agents: tuple[str, ...] = ("quota-view",)

    def __init__(self, redis: Redis, topology: Topology, live: str, scratch: str) -> None:
        check_prefixes(live, scratch)
        self.redis = redis
        self.live = live
        self.scratch = scratch
        self.view = QuotaView(redis, scratch)
        self.streams = [*topology.requests.streams, *topology.quota.streams]
        self.wanted: tuple[bytes, ...] | None = type_filter(_TYPES)
        self.accept: frozenset[str] | None = _TYPES
        self._swap = redis.register_script(SWAP_LUA)

    @property
    def description(self) -> str:
        return f"Redis prefix {self.scratch!r}"

    @property
    def live_description(self) -> str:
        return f"Redis prefix {self.live!r}"

    async def reset(self) -> None:
        await self.view.clear()

    async def apply(self, chunk: Chunk) -> int:
        items: list[Any] = chunk.items
        if not items or items[-1][0] < chunk.last:
            items = [*items, (chunk.last, POSITION_ONLY)]
        await self.view.apply(chunk.stream, items)
        return len(chunk.items)

    async def positions(self) -> dict[str, int]:
        return await self.view.positions(self.streams)

    async def swap(self, catch_up: CatchUp) -> SwapResult:
        """One attempt; the caller catches up and retries while the live view is ahead."""
        done, detail = await self._swap(args=[self.live, self.scratch])
        if int(done) == 1:
            return SwapResult(swapped=True, detail=f"{int(detail)} tenant(s) moved")
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in detail]
        lagging = {
            values[i]: (int(values[i + 1]), int(values[i + 2])) for i in range(0, len(values), 3)
        }
        return SwapResult(swapped=False, lagging=lagging)
