"""``just bench-inference``: the inference agent with and without Triton's dynamic batching.

Both runs measure *through the agent*: N reservations for the ``echo`` model (which sleeps
``batch_cost_ms`` = 10 ms once per execute call, like a kernel launch) are published to the
``quota`` topic of a fresh topology on RabbitMQ while ``streams.agents.inference`` runs in this
process, and the clock stops when all N results are in ``requests``. The two runs differ only
in the Triton started for them:

* batched: ``triton_models/echo/config.pbtxt`` (dynamic batching, up to 64 rows per execute);
* unbatched: ``--model-config-name=unbatched`` (``echo/configs/unbatched.pbtxt``: one request
  per execute call).

Each Triton loads ``echo`` alone (``--model-control-mode=explicit``). Latencies are the
results' ``latency_ms`` (the agent's first call to the answer: Triton's queue included);
``*_avg_batch`` is Triton's inferences per execution. The last line on stdout is one JSON
object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcaio

from bench.common import PROMPTS, Report
from events import InferenceCompleted, TokensReserved, decode
from events.model import RequestSpec
from quotaflow.settings import Settings
from quotaflow.triton.server import TritonOptions, astart_triton, free_port
from streams.agents.inference import InferenceSettings, register_inference
from streams.agents.inference_client import TritonModelClient
from streams.log import Position, read_until_tail
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology

MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "triton_models"


def reservations(count: int, tenants: int) -> list[TokensReserved]:
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        request_id = uuid.uuid4()
        out.append(
            TokensReserved(
                tenant_id=f"tenant-{i % tenants}",
                request_id=request_id,
                tokens=200,
                expires_at=now + timedelta(minutes=5),
                spec=RequestSpec(
                    model="echo", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=16 + i % 48
                ),
                correlation_id=request_id,
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def execution_counts(url: str) -> tuple[int, int]:
    async with grpcaio.InferenceServerClient(url) as client:
        stats: Any = await client.get_inference_statistics("echo", as_json=True)
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


async def run_once(
    settings: Settings,
    log: RabbitEventLog,
    mode: str,
    config_name: str | None,
    events: list[TokensReserved],
    partitions: int,
    report: Report,
) -> None:
    options = TritonOptions(
        model_repository=MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        model_config_name=config_name,
        extra_args=("--model-control-mode=explicit", "--load-model=echo"),
    )
    triton_log = Path(f"/tmp/bench-inference-{mode}-{uuid.uuid4().hex[:6]}.log")
    report.line(f"{mode}: starting tritonserver (log {triton_log})")
    triton = await astart_triton(options, log_path=triton_log, ready_timeout_s=180)
    topo = Topology(partitions=partitions, prefix=f"bench-{uuid.uuid4().hex[:6]}-")
    app = App("bench", log, topology=topo)
    client = TritonModelClient(triton.grpc_url)
    try:
        await app.create_streams()
        register_inference(app, client=client, options=InferenceSettings())
        stop = asyncio.Event()
        runner = AgentRunner(app, ["inference"], StaticOwnership(), interval=0.1, lag_every=10**9)
        task = asyncio.create_task(runner.run(stop))
        while len(runner.workers) < partitions:  # noqa: ASYNC110 - the runner starts them
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # subscribed
        inferences0, executions0 = await execution_counts(triton.grpc_url)
        report.line(f"{mode}: publishing {len(events)} reservations")
        started = time.perf_counter()
        await app.topic(topo.quota).send_many(events)
        done = 0
        while done < len(events):
            await asyncio.sleep(0.02)
            done = sum([await log.tail(s) for s in topo.requests.streams])
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        inferences1, executions1 = await execution_counts(triton.grpc_url)
        latencies = []
        for stream in topo.requests.streams:
            async for records in read_until_tail(log, stream, Position.first()):
                for r in records:
                    event = decode(r.data)
                    if not isinstance(event, InferenceCompleted):
                        raise RuntimeError(f"{mode}: not a completion: {event!r}")
                    latencies.append(event.latency_ms)
        if len(latencies) != len(events):
            raise RuntimeError(f"{mode}: {len(latencies)} results for {len(events)} requests")
        rate = len(events) / elapsed
        report.add(f"{mode}_per_s", rate)
        report.add(f"{mode}_p50_ms", percentile(latencies, 0.50))
        report.add(f"{mode}_p99_ms", percentile(latencies, 0.99))
        report.add(f"{mode}_avg_batch", (inferences1 - inferences0) / (executions1 - executions0))
        f = report.figures
        report.line(
            f"{mode}: {rate:,.0f} requests/s, p50 {f[f'{mode}_p50_ms']:.1f} ms, "
            f"p99 {f[f'{mode}_p99_ms']:.1f} ms, {f[f'{mode}_avg_batch']:.1f} requests per execute"
        )
    finally:
        await client.close()
        for topic in topo.all:
            for stream in topic.streams:
                await log.delete_stream(stream)
        await triton.astop()


async def main(count: int, partitions: int, modes: list[str]) -> None:
    settings = Settings()
    report = Report("inference")
    report.add("requests", count)
    report.add("partitions", partitions)
    report.figures["measured"] = "through the inference agent (RabbitMQ in, Triton gRPC, out)"
    events = reservations(count, tenants=50)
    log = RabbitEventLog(settings.stream_endpoint, name="bench-inference")
    try:
        for mode in modes:
            config = None if mode == "batched" else "unbatched"
            await run_once(settings, log, mode, config, events, partitions, report)
    finally:
        await log.close()
    f = report.figures
    if "batched_per_s" in f and "unbatched_per_s" in f:
        report.add("ratio_batched_vs_unbatched", f["batched_per_s"] / f["unbatched_per_s"])
        report.line(f"dynamic batching: {f['ratio_batched_vs_unbatched']:.1f}x the requests/s")
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument(
        "--modes", default="batched,unbatched", help="comma-separated: batched, unbatched"
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"batched", "unbatched"}:
        parser.error("--modes: batched and/or unbatched")
    asyncio.run(main(args.requests, args.partitions, modes))
