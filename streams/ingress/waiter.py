"""The decision waiter: one consumer of every ``quota`` partition per process.

``POST /v1/requests`` registers a future for its request id *before* appending the request,
then waits (bounded) for the quota agent's TokensReserved or RequestRejected. The waiter reads
each ``quota`` partition from the moment the process started (a timestamp position taken at
construction, a little before the subscriptions exist, so no decision of a request this
process appended can be missed while the lazy subscriptions connect), and resolves the
futures by request id. Recent decisions are kept in a bounded cache, so an idempotent retry
(on any replica: every replica reads every partition) finds a decision that came earlier.

Decoding is on the hot path (every decision of every tenant passes through every replica):
a record of the current TokensReserved / RequestRejected version is read with orjson for the
few fields needed; anything else goes through :func:`events.decode` (upcasters included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from events import DecodeError, RequestRejected, TokensReserved, decode
from events.model import CURRENT_VERSIONS
from streams.log import EventLog, Position, Record

log = logging.getLogger(__name__)

_RESERVED = CURRENT_VERSIONS["TokensReserved"]
_REJECTED = CURRENT_VERSIONS["RequestRejected"]
#: How far before construction the subscriptions start (clock skew with the broker).
_LOOKBACK_MS = 2_000


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    tenant_id: str
    status: Literal["reserved", "rejected"]
    tokens: int
    reason: str | None = None
    detail: str = ""
    retry_after_s: float | None = None


def parse(data: bytes) -> Decision | None:
    """The decision a ``quota`` record holds, ``None`` for any other record."""
    try:
        raw: Any = orjson.loads(data)
        kind, version = raw["type"], raw["version"]
        # ids of another type (a poison record): the codec below decides, and refuses them
        fast = isinstance(raw.get("request_id"), str) and isinstance(raw.get("tenant_id"), str)
        if fast and kind == "TokensReserved" and version == _RESERVED:
            return Decision(raw["request_id"], raw["tenant_id"], "reserved", int(raw["tokens"]))
        if fast and kind == "RequestRejected" and version == _REJECTED:
            return Decision(
                raw["request_id"],
                raw["tenant_id"],
                "rejected",
                int(raw.get("requested_tokens", 0)),
                str(raw["reason"]),
                str(raw.get("detail", "")),
                raw.get("retry_after_s"),
            )
        if kind not in ("TokensReserved", "RequestRejected"):
            return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    try:  # an older version (upcast) or something odd: the codec decides
        event = decode(data)
    except DecodeError:
        return None
    if isinstance(event, TokensReserved):
        return Decision(str(event.request_id), event.tenant_id, "reserved", event.tokens)
    if isinstance(event, RequestRejected):
        return Decision(
            str(event.request_id),
            event.tenant_id,
            "rejected",
            event.requested_tokens,
            event.reason,
            event.detail,
            event.retry_after_s,
        )
    return None


class DecisionWaiter:
    def __init__(
        self,
        log: EventLog,
        streams: Sequence[str],
        *,
        cache_size: int = 65_536,
        start: Position | None = None,
    ) -> None:
        self._log = log
        self._streams = list(streams)
        self._cache_size = cache_size
        self._start = start or Position.timestamp(int(time.time() * 1000) - _LOOKBACK_MS)
        self._waiting: dict[str, tuple[asyncio.Future[Decision], int]] = {}
        self._recent: OrderedDict[str, Decision] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.seen = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        for stream in self._streams:
            task = asyncio.create_task(self._consume(stream), name=f"decisions {stream}")
            self._tasks.append(task)

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        for future, _ in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def _consume(self, stream: str) -> None:
        start = self._start
        delay = 0.2
        while True:
            sub = self._log.subscribe(stream, start)
            try:
                async for records in sub:
                    self._deliver(records)
                    start = Position.offset(records[-1].offset + 1)
                    delay = 0.2
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("decisions from %s: %r; resubscribing in %.1fs", stream, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                await sub.close()

    def _deliver(self, records: list[Record]) -> None:
        for record in records:
            decision = parse(record.data)
            if decision is not None:
                self.resolve(decision)

    def resolve(self, decision: Decision) -> None:
        """Record a decision and wake whoever waits for it (the first decision wins)."""
        rid = decision.request_id
        self.seen += 1
        if self._cache_size:
            if rid in self._recent:
                return
            self._recent[rid] = decision
            if len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
        waiting = self._waiting.get(rid)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(decision)

    # -- waiting ------------------------------------------------------------------------

    def recent(self, request_id: str) -> Decision | None:
        return self._recent.get(request_id)

    def expect(self, request_id: str) -> asyncio.Future[Decision]:
        """A future for this request's decision; call before the request is appended, and
        :meth:`forget` it when done."""
        entry = self._waiting.get(request_id)
        if entry is None:
            future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
            known = self._recent.get(request_id)
            if known is not None:
                future.set_result(known)
            self._waiting[request_id] = (future, 1)
            return future
        self._waiting[request_id] = (entry[0], entry[1] + 1)
        return entry[0]

    def forget(self, request_id: str) -> None:
        entry = self._waiting.get(request_id)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._waiting[request_id]
        else:
            self._waiting[request_id] = (entry[0], entry[1] - 1)

    @staticmethod
    async def wait(future: asyncio.Future[Decision], timeout: float) -> Decision | None:
        """The decision, or ``None`` if it does not come within ``timeout`` seconds."""
        if not future.done():
            await asyncio.wait((future,), timeout=timeout)
        if future.done() and not future.cancelled():
            return future.result()
        return None

    @property
    def pending(self) -> int:
        return len(self._waiting)
