"""How the inference agent calls a model: priority slots, a timeout per call, bounded retries.

:class:`PrioritySlots` bounds the calls in flight; when a slot frees, the waiting call of the
highest priority takes it (ties: the one that asked first). :func:`call_model` runs one
reservation to an :data:`Outcome` and never raises (but for cancellation): a result for every
reservation, so the agent emits exactly one event per input.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from events.model import RequestSpec
from streams.agents.inference_client import Answer, CallError, ModelClient

log = logging.getLogger(__name__)

#: Our own guard above the gRPC deadline, for a client that does not honour it.
_GUARD_S = 1.0


class PrioritySlots:
    """At most ``size`` holders; waiters are served highest ``priority`` first, then FIFO."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def in_use(self) -> int:
        return self.size - self._free

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._seq), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():  # skip waiters that were cancelled
                future.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Timeouts and retries of one reservation's calls (see :func:`call_model`)."""

    attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    deadline_s: float = 60.0
    timeout_s: float = 30.0
    timeout_per_token_s: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")

    def timeout_for(self, spec: RequestSpec) -> float:
        """A call's deadline grows with the most tokens it may generate."""
        return self.timeout_s + spec.max_tokens * self.timeout_per_token_s

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The pause after failed attempt ``attempt`` (1-based): exponential, capped, jittered
        to 50–100 % so calls that failed together do not all come back together."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
        return base * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True, slots=True)
class Success:
    answer: Answer
    latency_ms: float  # from the start of the first attempt to the answer, retries included
    attempts: int


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    retryable: bool
    attempts: int


Outcome = Success | Failure


async def call_model(
    client: ModelClient,
    spec: RequestSpec,
    *,
    request_id: str,
    slots: PrioritySlots,
    policy: RetryPolicy,
    rng: random.Random,
) -> Outcome:
    """Call until an answer, a non-retryable error, ``policy.attempts`` calls, or no time left
    in ``policy.deadline_s`` (counted from the first attempt) for the next pause and call.

    The slot is held only during a call, not during the pause after a failed one.
    """
    timeout = policy.timeout_for(spec)
    started: float | None = None
    attempt = 0
    last = CallError("no attempt made", retryable=True)
    while attempt < policy.attempts:
        attempt += 1
        async with slots.slot(spec.priority):
            if started is None:
                started = time.monotonic()
            try:
                async with asyncio.timeout(timeout + _GUARD_S):
                    answer = await client.generate(spec, request_id=request_id, timeout_s=timeout)
                latency_ms = (time.monotonic() - started) * 1000.0
                return Success(answer, latency_ms, attempt)
            except CallError as exc:
                last = exc
            except TimeoutError:
                last = CallError(f"DEADLINE_EXCEEDED: no answer in {timeout:.1f}s", retryable=True)
            except OSError as exc:
                last = CallError(f"connection error: {exc!r}", retryable=True)
            except Exception as exc:
                log.exception("inference call for request %s failed unexpectedly", request_id)
                return Failure(f"inference agent error: {exc!r}", False, attempt)
        if not last.retryable:
            return Failure(last.reason, False, attempt)
        pause = policy.delay(attempt, rng)
        if attempt >= policy.attempts or time.monotonic() + pause - started >= policy.deadline_s:
            break
        await asyncio.sleep(pause)
    elapsed = time.monotonic() - (started or time.monotonic())
    return Failure(
        f"gave up after {attempt} attempt(s) in {elapsed:.1f}s: {last.reason}", True, attempt
    )
