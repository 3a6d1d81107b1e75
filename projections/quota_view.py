"""The quota view in Redis: per tenant budget, used, reserved, remaining, rate windows, open
reservations, as the quota agent's decisions (``quota`` topic) and the policies (``requests``
topic) say.

A batch of one stream's events and that stream's position are applied by one Lua script
(``lua/quota_apply.lua``), atomically: the script skips every event at or below the stored
position, so re-applying a batch, or an overlapping one, changes nothing. Events of the two
topics may interleave in any way: period counters are keyed by period (UTC day and month of
the reservation), never by the order of arrival, so the result is the same.

Keys (``prefix`` is configurable, so a replay can rebuild into a scratch prefix):

* ``{prefix}pos`` hash stream -> last applied offset
* ``{prefix}tenants`` set of tenant ids (what :meth:`QuotaView.clear` deletes)
* ``{prefix}q:{tenant}`` hash: policy, counters of the latest day/month, open count/tokens,
  rejections, event time
* ``{prefix}r:{tenant}`` hash request id -> ``t|tokens|counted|open``: open reservations,
  and closed ones still in the rate window
* ``{prefix}w:{tenant}`` sorted set request id by admission time (µs): the rate window
* ``{prefix}pe:{tenant}`` set of applied policy event ids (a duplicated one is skipped)

The read model is :class:`streams.quota.TenantQuota`, computed by the same function as the
pure fold's, so the view and the fold agree value for value.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis

from events import (
    Event,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)
from streams.quota import PeriodCounters, TenantQuota, make_tenant_quota
from streams.quota.timeline import WINDOW_US, day_start, month_bounds, to_us

_APPLY = resources.files("projections").joinpath("lua/quota_apply.lua").read_text("utf-8")
_WINDOW = str(WINDOW_US)
_CHUNK = 1_000


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Row = list[str | int]


def encode(offset: int, event: Event) -> Row:
    """The script's row for one event (see ``lua/quota_apply.lua``)."""
    if isinstance(event, TokensReserved):
        t = to_us(event.occurred_at)
        rid = str(event.request_id)
        month, month_end = month_bounds(t)
        return ["R", offset, event.tenant_id, rid, t, event.tokens, month, month_end, day_start(t)]
    if isinstance(event, ReservationSettled):
        t = to_us(event.occurred_at)
        actual = event.prompt_tokens + event.completion_tokens
        return ["S", offset, event.tenant_id, str(event.request_id), t, actual]
    if isinstance(event, ReservationReleased | ReservationExpired):
        return ["L", offset, event.tenant_id, str(event.request_id), to_us(event.occurred_at)]
    if isinstance(event, RequestRejected) and event.reason != "unknown_tenant":
        return ["J", offset, event.tenant_id, to_us(event.occurred_at)]
    if isinstance(event, TenantRegistered | QuotaPolicySet):
        p = event.policy
        return [
            "P",
            offset,
            event.tenant_id,
            str(event.event_id),
            to_us(event.occurred_at),
            p.token_budget,
            p.period,
            p.tokens_per_minute or 0,
            p.requests_per_minute or 0,
            p.max_concurrent or 0,
            p.reservation_ttl_s,
        ]
    return ["N", offset]


class QuotaView:
    def __init__(self, redis: Redis, prefix: str = "qf:", chunk: int = _CHUNK) -> None:
        self._redis = redis
        self._prefix = prefix
        self._chunk = chunk
        self._script = redis.register_script(_APPLY)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def apply(self, stream: str, items: Sequence[tuple[int, Event]]) -> int:
        """Apply ``(offset, event)`` pairs of ``stream`` (offsets increasing); how many were new.

        Each chunk of up to ``chunk`` events is one atomic script call with its position.
        """
        for (a, _), (b, _) in itertools.pairwise(items):
            if b <= a:
                raise ValueError(f"offsets must increase: {a} then {b}")
        applied = 0
        for start in range(0, len(items), self._chunk):
            chunk = items[start : start + self._chunk]
            batch = orjson.dumps([encode(offset, event) for offset, event in chunk])
            args: list[str | bytes] = [self._prefix, stream, str(chunk[-1][0]), _WINDOW, batch]
            applied += int(await self._script(args=args))
        return applied

    async def positions(self, streams: Sequence[str]) -> dict[str, int]:
        """The last applied offset of each stream, -1 where none was."""
        if not streams:
            return {}
        values = await self._redis.hmget(self._prefix + "pos", list(streams))
        return {s: -1 if v is None else int(v) for s, v in zip(streams, values, strict=True)}

    async def tenant(self, tenant_id: str, at: datetime | None = None) -> TenantQuota | None:
        """The read model at ``at`` (default: the tenant's latest event time in the view).

        ``at`` must not be earlier than that (older window entries are gone). ``None`` for a
        tenant whose policy the view has not seen.
        """
        p = self._prefix
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(f"{p}q:{tenant_id}")
            pipe.hgetall(f"{p}r:{tenant_id}")
            q_raw, r_raw = await pipe.execute()
        q = {_str(k): _str(v) for k, v in q_raw.items()}
        if "budget" not in q:
            return None
        now, policy_time = int(q["now"]), int(q["pt"])
        at_us = (now if now >= 0 else policy_time) if at is None else to_us(at)
        if at_us < now:
            raise ValueError("the view has moved past the requested time")
        policy = QuotaPolicy(
            token_budget=int(q["budget"]),
            period="day" if q["period"] == "day" else "month",
            tokens_per_minute=int(q["tpm"]) or None,
            requests_per_minute=int(q["rpm"]) or None,
            max_concurrent=int(q["maxc"]) or None,
            reservation_ttl_s=int(q["ttl"]),
        )
        counters = PeriodCounters(
            int(q["mk"]), int(q["um"]), int(q["rm"]), int(q["dk"]), int(q["ud"]), int(q["rd"])
        )
        window = []
        for record in r_raw.values():
            t, _, counted, _ = _str(record).split("|")
            window.append((int(t), int(counted)))
        return make_tenant_quota(
            tenant_id,
            policy,
            at_us,
            counters,
            window,
            int(q["openn"]),
            int(q["opent"]),
            int(q["rej"]),
        )

    async def tenant_ids(self) -> list[str]:
        members = await self._redis.smembers(self._prefix + "tenants")
        return sorted(_str(m) for m in members)

    async def snapshot(self) -> dict[str, Any]:
        """The whole view as plain data (for comparing two views)."""
        p = self._prefix
        positions = await self._redis.hgetall(p + "pos")
        tenants: dict[str, Any] = {}
        for tid in await self.tenant_ids():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(f"{p}q:{tid}")
                pipe.hgetall(f"{p}r:{tid}")
                pipe.zrange(f"{p}w:{tid}", 0, -1, withscores=True)
                pipe.smembers(f"{p}pe:{tid}")
                q, r, w, pe = await pipe.execute()
            tenants[tid] = {
                "quota": {_str(k): _str(v) for k, v in q.items()},
                "reservations": {_str(k): _str(v) for k, v in r.items()},
                "window": {_str(m): int(s) for m, s in w},
                "policy_events": sorted(_str(m) for m in pe),
            }
        return {
            "positions": {_str(k): int(v) for k, v in positions.items()},
            "tenants": tenants,
        }

    async def clear(self) -> None:
        """Delete this view (only keys under its own prefix)."""
        p = self._prefix
        keys = [p + "pos"]
        for tid in await self.tenant_ids():
            keys += (f"{p}q:{tid}", f"{p}r:{tid}", f"{p}w:{tid}", f"{p}pe:{tid}")
        for start in range(0, len(keys), 500):
            await self._redis.unlink(*keys[start : start + 500])
        await self._redis.unlink(p + "tenants")
