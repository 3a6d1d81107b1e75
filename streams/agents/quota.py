"""The quota agent: reserves tokens for each request and settles them against actual usage.

A thin shell over the pure :func:`streams.quota.decide` / :func:`streams.quota.evolve`: it
reads one partition of ``requests`` (tenant admin, requests, inference results, clock ticks)
in log order and appends its decisions to the same partition of ``quota``.

State is a fold of the input partition (``Ack.REPLAY``): after a restart the agent replays
the partition from its first offset, deciding everything again in memory; the decisions that
are already in the log are recognised by publishing id and not sent twice, so the agent
resumes exactly where it crashed, without losing or repeating a decision.
"""

from __future__ import annotations

from events import (
    ClockTicked,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    QuotaPolicySet,
    TenantRegistered,
)
from streams.quota import QuotaState, decide, evolve
from streams.runtime import Ack, App, Stream

INPUTS = (
    TenantRegistered,
    QuotaPolicySet,
    InferenceRequested,
    InferenceCompleted,
    InferenceFailed,
    ClockTicked,
)


#: How often an idle partition's event time advances (reservations expire on the next event).
TICK_S = 10.0


def register_quota(app: App, name: str = "quota", tick_s: float | None = TICK_S) -> None:
    decisions = app.topic(app.topology.quota)

    @app.agent(
        app.topic(app.topology.requests), accepts=INPUTS, ack=Ack.REPLAY, name=name, tick_s=tick_s
    )
    async def quota(stream: Stream) -> None:
        state = QuotaState()
        async for event in stream:
            outs = decide(state, event)
            evolve(state, event)
            for out in outs:
                evolve(state, out)
                decisions.emit(out, cause=event)
