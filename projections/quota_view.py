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
* ``{prefix}q`` hash tenant -> its quota as text, the ``QUOTA_FIELDS`` joined by ``|`` (``''``
  for a policy field not set): policy, used/reserved of the latest day and month, open
  count/tokens, rejections, event time
* ``{prefix}r`` hash ``tenant:request id`` (32 hex digits) -> MessagePack ``[admitted at,
  tokens, counted, open]``: open reservations, and closed ones still in the rate window
* ``{prefix}w:{tenant}`` sorted set request id by admission time (µs): the rate window
* ``{prefix}pe`` set ``tenant:policy event id`` of applied policy events (a duplicate is
  skipped)

One script call touches a fixed number of keys plus one sorted set per tenant that got new
reservations or has window entries to drop, so a batch of many tenants costs little more
than a batch of one. The read model is :class:`streams.quota.TenantQuota`, computed by the
same function as the pure fold's, so the view and the fold agree value for value.
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
from projections.view_guard import Floors
from streams.quota import PeriodCounters, TenantQuota, make_tenant_quota
from streams.quota.timeline import WINDOW_US, day_start, month_bounds, to_us

_LUA = resources.files("projections").joinpath("lua")
_APPLY = _LUA.joinpath("quota_apply.lua").read_text("utf-8")
_READ = _LUA.joinpath("quota_read.lua").read_text("utf-8")
#: The fields of a tenant's quota, in the order the scripts store them.
QUOTA_FIELDS = (
    "budget",
    "period",
    "tpm",
    "rpm",
    "maxc",
    "ttl",
    "pt",
    "now",
    "mk",
    "mke",
    "um",
    "rm",
    "dk",
    "ud",
    "rd",
    "openn",
    "opent",
    "rej",
    "wmin",
)
_WINDOW = str(WINDOW_US)
_CHUNK = 1_000


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Row = list[str | int]


def encode(offset: int, event: Event) -> Row:
    """The script's row for one event (see ``lua/quota_apply.lua``)."""
    if isinstance(event, TokensReserved):
        t = to_us(event.occurred_at)
        rid = event.request_id.hex
        month, month_end = month_bounds(t)
        return ["R", offset, event.tenant_id, rid, t, event.tokens, month, month_end, day_start(t)]
    if isinstance(event, ReservationSettled):
        t = to_us(event.occurred_at)
        actual = event.prompt_tokens + event.completion_tokens
        return ["S", offset, event.tenant_id, event.request_id.hex, t, actual]
    if isinstance(event, ReservationReleased | ReservationExpired):
        return ["L", offset, event.tenant_id, event.request_id.hex, to_us(event.occurred_at)]
    if isinstance(event, RequestRejected) and event.reason != "unknown_tenant":
        return ["J", offset, event.tenant_id, to_us(event.occurred_at)]
    if isinstance(event, TenantRegistered | QuotaPolicySet):
        p = event.policy
        return [
            "P",
            offset,
            event.tenant_id,
            event.event_id.hex,
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
        self._floors = Floors()
        self._read = redis.register_script(_READ)

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
            last = chunk[-1][0]
            floor = str(self._floors.floor(stream))
            args: list[str | bytes] = [self._prefix, stream, str(last), _WINDOW, batch, floor]
            applied += self._floors.applied(stream, int(await self._script(args=args)), last)
        return applied

    async def positions(self, streams: Sequence[str]) -> dict[str, int]:
        """The last applied offset of each stream, -1 where none was."""
        if not streams:
            return {}
        values = await self._redis.hmget(self._prefix + "pos", list(streams))
        out = {s: -1 if v is None else int(v) for s, v in zip(streams, values, strict=True)}
        self._floors.loaded(out)
        return out

    async def tenant(self, tenant_id: str, at: datetime | None = None) -> TenantQuota | None:
        """The read model at ``at`` (default: the tenant's latest event time in the view).

        The default is deterministic (a replay reads the same); a live reading passes the
        wall clock, so that windows of an idle tenant drain. ``at`` must not be earlier than
        the tenant's latest event time (older window entries are gone). ``None`` for a tenant
        whose policy the view has not seen.
        """
        # entries admitted after at - 60 s (all of the sorted set when reading at ``now``)
        since = "-inf" if at is None else str(to_us(at) - WINDOW_US)
        reply = await self._read(args=[self._prefix, "tenant", tenant_id, since])
        if not reply:
            return None
        q = _quota(reply[0])
        if q.get("budget") is None:
            return None
        now, policy_time = q["now"], q["pt"]
        at_us = (now if now >= 0 else policy_time) if at is None else to_us(at)
        if at_us < now:
            raise ValueError("the view has moved past the requested time")
        policy = QuotaPolicy(
            token_budget=q["budget"],
            period="day" if q["period"] == "day" else "month",
            tokens_per_minute=q["tpm"] or None,
            requests_per_minute=q["rpm"] or None,
            max_concurrent=q["maxc"] or None,
            reservation_ttl_s=q["ttl"],
        )
        counters = PeriodCounters(q["mk"], q["um"], q["rm"], q["dk"], q["ud"], q["rd"])
        window = []
        for record in reply[1:]:
            if record is not None:
                t, _, counted, _ = _str(record).split("|")
                window.append((int(t), int(counted)))
        return make_tenant_quota(
            tenant_id, policy, at_us, counters, window, q["openn"], q["opent"], q["rej"]
        )

    async def tenant_ids(self) -> list[str]:
        return sorted(_str(t) for t in await self._redis.hkeys(self._prefix + "q"))

    async def snapshot(self) -> dict[str, Any]:
        """The whole view as plain data (for comparing two views)."""
        p = self._prefix
        quotas, records = await self._read(args=[p, "all"])
        tenants: dict[str, Any] = {
            _str(t): {"quota": _quota(v), "reservations": {}, "policy_events": []}
            for t, v in zip(quotas[::2], quotas[1::2], strict=True)
        }
        for key, record in zip(records[::2], records[1::2], strict=True):
            tenant, rid = _str(key).split(":")
            tenants[tenant]["reservations"][rid] = _str(record)
        for member in await self._redis.smembers(p + "pe"):
            tenant, event_id = _str(member).split(":")
            tenants[tenant]["policy_events"].append(event_id)
        for tenant, data in tenants.items():
            data["policy_events"].sort()
            window: list[Any] = await self._redis.zrange(f"{p}w:{tenant}", 0, -1, withscores=True)
            data["window"] = {_str(m): int(s) for m, s in window}
        positions = await self._redis.hgetall(p + "pos")
        return {
            "positions": {_str(k): int(v) for k, v in positions.items()},
            "tenants": tenants,
        }

    async def clear(self) -> None:
        """Delete this view (only keys under its own prefix)."""
        self._floors = Floors()
        p = self._prefix
        keys = [f"{p}w:{tenant}" for tenant in await self.tenant_ids()]
        keys += (p + "pos", p + "r", p + "pe", p + "q")
        for start in range(0, len(keys), 500):
            await self._redis.unlink(*keys[start : start + 500])


def _quota(raw: Any) -> dict[str, Any]:
    """A tenant's quota fields (numbers; ``period`` a string; None where unset)."""
    values = _str(raw).split("|")
    return {
        name: (value if name == "period" else int(value)) if value != "" else None
        for name, value in zip(QUOTA_FIELDS, values, strict=True)
    }
