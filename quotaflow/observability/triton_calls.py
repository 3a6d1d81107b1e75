"""How long the inference agent's calls to Triton take, per model and outcome.

    with time_triton_call(spec.model) as call:
        answer = await client.infer(...)       # raising marks the call "error" (or "cancelled")
        if answer_is_a_soft_failure:
            call.outcome = "timeout"           # or any short word

``quotaflow_triton_request_seconds`` is the client's view (queueing in Triton, network and
compute); Triton's own ``nv_inference_queue_duration_us`` says how much of it was queueing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Gauge, Histogram

TRITON_SECONDS = Histogram(
    "quotaflow_triton_request_seconds",
    "Seconds per call from the inference agent to Triton",
    ["model", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TRITON_IN_FLIGHT = Gauge(
    "quotaflow_triton_in_flight", "Calls to Triton waiting for an answer", ["model"]
)


@dataclass
class TritonCall:
    model: str
    outcome: str = "ok"


@contextmanager
def time_triton_call(model: str) -> Iterator[TritonCall]:
    """Time one call: ``ok`` unless the block sets ``call.outcome`` or raises (``error``)."""
    call = TritonCall(model)
    start = time.perf_counter()
    in_flight = TRITON_IN_FLIGHT.labels(model)
    in_flight.inc()
    try:
        yield call
    except asyncio.CancelledError:
        call.outcome = "cancelled"
        raise
    except BaseException:
        if call.outcome == "ok":  # keep an outcome the block chose before raising
            call.outcome = "error"
        raise
    finally:
        in_flight.dec()
        TRITON_SECONDS.labels(model, call.outcome).observe(time.perf_counter() - start)
