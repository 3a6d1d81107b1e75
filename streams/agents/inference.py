"""The inference agent: each reservation run on the model, its result sent back to ``requests``.

It reads every ``quota`` partition (only :class:`~events.model.TokensReserved`), calls the
model through a :class:`~streams.agents.inference_client.ModelClient` (Triton over gRPC in
production) and emits exactly one result per reservation to the same partition of
``requests``, where the quota agent settles or releases the reservation in one order with the
requests:

* :class:`~events.model.InferenceCompleted`: the prompt and completion tokens as the model
  counted them, the model's name and version, ``latency_ms`` (first attempt to answer, retries
  included), the text;
* :class:`~events.model.InferenceFailed`: ``retryable=False`` when the request or model is at
  fault (unknown model, invalid input, a model error: the reason is Triton's own message with
  its gRPC code), ``retryable=True`` when the server was unavailable or too slow for every
  attempt (the reason says how many attempts, how long, and the last error).

Both carry ``event_id = derive_id(reservation, "inference")``, the reservation's tenant,
request id, correlation id and headers, ``causation_id`` = the reservation, and
``occurred_at`` = the wall-clock time the result was obtained.

Concurrency and priority
------------------------
The agent takes up to ``batch`` reservations at a time (waiting at most ``within_ms`` for a
batch to fill), starts one call per reservation, and emits the batch's results when all of
them have one. At most ``concurrency`` calls are in flight per process (one limit shared by
the partitions the process owns), so Triton's dynamic batcher gets full batches without being
flooded. Calls start in order of ``spec.priority`` (9 first), ties in log order, and whenever
calls wait for a slot, a freed slot goes to the waiting call of the highest priority (ties:
the one that asked first; a call being retried asks again). So *priority orders the backlog
the agent has in hand* — the current batch of each partition this process owns — and nothing
beyond it: a partition's batch is finished before its next one is taken, so a low-priority
request waits at most for the calls of the batches in hand, and is never starved.

The subscription reads ``batch`` records at a time, so on a partition that holds only
reservations a batch ends where a read ends and its results are published (and the position
committed) when the next batch is taken. Where other decisions sit between reservations, a
batch may end inside a read, and then publication waits until a later batch ends exactly at a
read's end (the runtime publishes only when everything read has been handed to the agent).

Retries
-------
Each call has a deadline of ``timeout_s + max_tokens × timeout_per_token_s``. A retryable
error (see :mod:`streams.agents.inference_client`) is retried after an exponential, jittered
pause (``backoff_s`` doubling up to ``backoff_max_s``), for at most ``attempts`` calls and no
new call once ``deadline_s`` has passed since the first: then ``InferenceFailed(retryable=True)``.
A partition is therefore never blocked longer than about ``deadline_s`` plus one call by a
Triton that is down; it keeps going with failures, which the client may retry.

Exactly once
------------
``Ack.CHECKPOINT``: results are published with publishing ids derived from their
reservation's offset, and the input position is committed after they are confirmed. After a
crash the agent resumes after the last committed position and runs the model again for the
reservations after it; a result already stored for one of them has the same publishing id
(one result per reservation, always) and is dropped, so a request never gets two results —
even when the second run's outcome differs from the first.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.base import derive_id, utcnow
from events.model import InferenceCompleted, InferenceFailed, TokensReserved
from quotaflow.settings import Settings
from streams.agents.inference_calls import (
    Outcome,
    PrioritySlots,
    RetryPolicy,
    Success,
    call_model,
)
from streams.agents.inference_client import ModelClient, TritonModelClient
from streams.runtime import Ack, App, Stream

NAME = "inference"
ID_LABEL = "inference"


class InferenceSettings(BaseSettings):
    """``QUOTAFLOW_INFERENCE_*``: how the inference agent calls the model server."""

    model_config = SettingsConfigDict(env_prefix="QUOTAFLOW_INFERENCE_", extra="ignore")

    batch: int = Field(64, ge=1, le=4096, description="reservations taken at a time")
    within_ms: float = Field(10.0, ge=0, description="wait for a batch to fill")
    concurrency: int = Field(64, ge=1, description="calls in flight per process")
    timeout_s: float = Field(30.0, gt=0, description="call deadline, plus per token below")
    timeout_per_token_s: float = Field(0.1, ge=0)
    attempts: int = Field(6, ge=1, description="calls per reservation at most")
    backoff_s: float = Field(0.5, ge=0, description="first pause after a retryable error")
    backoff_max_s: float = Field(8.0, ge=0)
    deadline_s: float = Field(60.0, gt=0, description="no new attempt after this")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
            deadline_s=self.deadline_s,
            timeout_s=self.timeout_s,
            timeout_per_token_s=self.timeout_per_token_s,
        )


def result_event(
    reserved: TokensReserved, outcome: Outcome
) -> InferenceCompleted | InferenceFailed:
    """The one result of a reservation (pure but for ``occurred_at``: now)."""
    envelope: dict[str, Any] = {
        "event_id": derive_id(reserved.event_id, ID_LABEL),
        "occurred_at": utcnow(),
        "tenant_id": reserved.tenant_id,
        "causation_id": reserved.event_id,
        "correlation_id": reserved.correlation_id or reserved.request_id,
        "headers": reserved.headers,
    }
    if isinstance(outcome, Success):
        c = outcome.answer.completion
        return InferenceCompleted(
            **envelope,
            request_id=reserved.request_id,
            model=reserved.spec.model,
            model_version=outcome.answer.model_version,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            latency_ms=round(outcome.latency_ms, 3),
            text=c.text,
        )
    return InferenceFailed(
        **envelope,
        request_id=reserved.request_id,
        model=reserved.spec.model,
        reason=outcome.reason,
        retryable=outcome.retryable,
    )


def dispatch_order(reservations: Sequence[TokensReserved]) -> list[int]:
    """Indices of ``reservations`` in the order their calls start: priority 9 first, then log
    order."""
    return sorted(range(len(reservations)), key=lambda i: -reservations[i].spec.priority)


async def serve(
    client: ModelClient,
    reservations: Sequence[TokensReserved],
    *,
    slots: PrioritySlots,
    policy: RetryPolicy,
    rng: random.Random,
) -> list[Outcome]:
    """Every reservation's outcome, in input order; calls start in :func:`dispatch_order`."""
    tasks: dict[int, asyncio.Task[Outcome]] = {}
    for i in dispatch_order(reservations):
        r = reservations[i]
        call = call_model(
            client, r.spec, request_id=str(r.request_id), slots=slots, policy=policy, rng=rng
        )
        tasks[i] = asyncio.create_task(call)
    try:
        await asyncio.gather(*tasks.values())
    except BaseException:  # cancelled (the worker stops) or a bug: leave no call running
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        raise
    return [tasks[i].result() for i in range(len(reservations))]


def register_inference(
    app: App,
    settings: Settings | None = None,
    *,
    client: ModelClient | None = None,
    options: InferenceSettings | None = None,
    name: str = NAME,
) -> None:
    """Register the inference agent on ``app``: Triton at ``settings.triton_url`` unless a
    ``client`` is given; ``options`` default to the ``QUOTAFLOW_INFERENCE_*`` environment."""
    opts = options or InferenceSettings()
    model = client or TritonModelClient((settings or Settings()).triton_url)
    slots = PrioritySlots(opts.concurrency)
    policy = opts.retry
    results = app.topic(app.topology.requests)
    app.on_close(model.close)

    @app.agent(
        app.topology.quota,
        accepts=[TokensReserved],
        ack=Ack.CHECKPOINT,
        batch=opts.batch,
        name=name,
    )
    async def inference(stream: Stream) -> None:
        rng = random.Random()
        async for batch in stream.take(opts.batch, within=opts.within_ms / 1000.0):
            reservations = [e for e in batch if isinstance(e, TokensReserved)]
            outcomes = await serve(model, reservations, slots=slots, policy=policy, rng=rng)
            for reserved, outcome in zip(reservations, outcomes, strict=True):
                results.emit(result_event(reserved, outcome), cause=reserved)
