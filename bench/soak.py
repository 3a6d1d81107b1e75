"""``just soak``: a steady load through the HTTP API for a long while, watching whether each
component's memory stays flat.

The components run as the separate processes a deployment has, on this machine:

* ingress: ``quotaflow serve`` on a free port;
* agents: ``quotaflow run quota quota-view billing billing-catalog tenant-directory
  request-results inference`` (one process, owning every partition);
* triton: ``tritonserver`` serving only the cheap ``echo`` model (with its Python stub
  processes, counted with it).

This process sends ``POST /v1/requests`` (model ``echo``, 8 tenants whose budgets never run
out) at ``--rate`` per second, open loop, for ``--duration`` seconds, and samples each
component's RSS every ``--sample-every`` seconds. At the end it prints each component's RSS
at the start (the first samples after ``--warmup``) and at the end, and a verdict: flat if it
grew less than 10 % or less than 20 MiB after the warm-up. With matplotlib installed it draws
the RSS over time into a PNG. Everything runs under a stream prefix, Redis prefix and billing
schema of its own, removed at the end. Progress goes to stderr; the last line on stdout is one
JSON object.

    python -m bench.soak                      # 10 minutes at 100 requests/s
    python -m bench.soak --duration 60 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from bench.common import PROMPTS, Report
from bench.ingress_rates import (
    HOST,
    Connection,
    call_once,
    free_port,
    http_request,
    spawn,
    stop,
    wait_ready,
)
from bench.rss import flatness, plot, tree_rss_mib
from quotaflow.settings import Settings
from quotaflow.triton.server import TritonHandle, TritonOptions, astart_triton
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology

ROOT = Path(__file__).resolve().parents[1]
AGENTS = [
    "quota",
    "quota-view",
    "billing",
    "billing-catalog",
    "tenant-directory",
    "request-results",
    "inference",
]
TENANTS = 8
CONNECTIONS = 32
TIMEOUT_S = 10.0
FOLLOWED = 20  # the last requests checked for their settlement at the end


@dataclass
class Load:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=FOLLOWED))


@dataclass
class Deployment:
    run: str
    topology: Topology
    env: dict[str, str]
    logs: Path
    port: int
    admin: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    triton: TritonHandle | None = None

    def pids(self) -> dict[str, int]:
        out = {"ingress": self.procs["ingress"].pid, "agents": self.procs["agents"].pid}
        if self.triton is not None:
            out["triton"] = self.triton.process.pid
        return out


def prepare(partitions: int) -> Deployment:
    """Names of its own for everything the soak creates (nothing is started yet)."""
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=partitions, prefix=f"soak-{run}-")
    admin_key = secrets.token_urlsafe(24)
    port = free_port()
    env = {
        "QUOTAFLOW_STREAM_PREFIX": topo.prefix,
        "QUOTAFLOW_PARTITIONS": str(partitions),
        "QUOTAFLOW_REDIS_PREFIX": f"soak-{run}:",
        "QUOTAFLOW_BILLING_SCHEMA": f"soak_{run}",
        "QUOTAFLOW_ADMIN_KEY": admin_key,
        "QUOTAFLOW_HTTP_PORT": str(port),
        "QUOTAFLOW_METRICS_PORT": str(free_port()),
        "QUOTAFLOW_LOG_LEVEL": "WARNING",
    }
    logs = Path(tempfile.mkdtemp(prefix="soak-"))
    return Deployment(run, topo, env, logs, port, {"Authorization": f"Bearer {admin_key}"})


async def launch(d: Deployment, settings: Settings, report: Report) -> None:
    """Triton, the streams, the agents and the API; until the API is ready."""
    options = TritonOptions(
        model_repository=ROOT / "triton_models",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_args=("--model-control-mode=explicit", "--load-model=echo"),
    )
    report.line(f"starting tritonserver (echo only); logs in {d.logs}")
    d.triton = await astart_triton(options, log_path=d.logs / "triton.log", ready_timeout_s=180)
    d.env["QUOTAFLOW_TRITON_URL"] = d.triton.grpc_url
    log = RabbitEventLog(settings.stream_endpoint, name="soak")
    try:
        await App("soak", log, topology=d.topology).create_streams()
    finally:
        await log.close()
    agents = ["run", *AGENTS, "--ownership", "static"]
    d.procs["agents"] = spawn(agents, d.env, d.logs / "agents.log")
    d.procs["ingress"] = spawn(["serve", "--host", HOST], d.env, d.logs / "ingress.log")
    await wait_ready(d.port, list(d.procs.values()), d.logs)
    partitions = d.topology.partitions
    report.line(f"API on {HOST}:{d.port}, {partitions} partitions, prefix {d.topology.prefix}")


async def clean(d: Deployment, settings: Settings) -> None:
    for proc in d.procs.values():
        stop(proc)
    if d.triton is not None:
        await d.triton.astop()
    log = RabbitEventLog(settings.stream_endpoint, name="soak")
    try:
        for topic in d.topology.all:
            for stream in topic.streams:
                with contextlib.suppress(Exception):
                    await log.delete_stream(stream)
    finally:
        await log.close()
    redis = Redis.from_url(settings.redis_url)
    try:
        async for key in redis.scan_iter(match=d.env["QUOTAFLOW_REDIS_PREFIX"] + "*"):
            await redis.unlink(key)
    finally:
        await redis.aclose()
    async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        schema = sql.Identifier(d.env["QUOTAFLOW_BILLING_SCHEMA"])
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))


async def tenants(d: Deployment) -> list[str]:
    """Register the tenants; their keys once each works."""
    keys = []
    for t in range(TENANTS):
        body = {"tenant_id": f"soak-{t}", "name": f"Soak {t}", "policy": {"token_budget": 10**15}}
        status, answer = await call_once(
            d.port, "POST", "/v1/admin/tenants", d.admin, orjson.dumps(body)
        )
        if status != 201:
            raise RuntimeError(f"tenant creation failed: {status} {answer[:200]!r}")
        keys.append(orjson.loads(answer)["api_key"])
    for t, key in enumerate(keys):
        deadline = time.monotonic() + 60
        auth = {"Authorization": f"Bearer {key}"}
        while (await call_once(d.port, "GET", f"/v1/tenants/soak-{t}/quota", auth))[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"soak-{t} never became known")
            await asyncio.sleep(0.2)
    return keys


async def send(port: int, keys: list[str], rate: float, duration: float, load: Load) -> None:
    """``rate`` requests per second for ``duration`` seconds, each due at ``t0 + i / rate``
    whatever happened before (open loop)."""
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn: Connection | None = None
        try:
            while (item := await queue.get()) is not None:
                due, i = item
                if loop.time() - due > TIMEOUT_S:
                    load.errors += 1
                    continue
                tenant = i % len(keys)
                body = orjson.dumps(
                    {"model": "echo", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 32}
                )
                request = http_request(
                    "POST", "/v1/requests", {"Authorization": f"Bearer {keys[tenant]}"}, body
                )
                try:
                    if conn is None:
                        conn = await Connection.open(port)
                    status, answer = await asyncio.wait_for(conn.call(request), TIMEOUT_S)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    load.errors += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                load.latencies.append(loop.time() - due)
                load.statuses[str(status)] += 1
                if status == 202:
                    load.last.append((orjson.loads(answer)["request_id"], tenant))
        finally:
            if conn is not None:
                conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    start = loop.time() + 0.05
    for i in range(int(rate * duration)):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, i))
        load.sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait(workers, timeout=TIMEOUT_S + 5)


async def sample(
    pids: dict[str, int],
    every: float,
    series: dict[str, list[tuple[float, float]]],
    t0: float,
    done: asyncio.Event,
    load: Load,
    report: Report,
) -> None:
    n = 0
    while True:
        t = time.monotonic() - t0
        for name, pid in pids.items():
            series[name].append((t, tree_rss_mib(pid)))
        if n % max(1, round(30 / every)) == 0 or done.is_set():
            rss = "  ".join(f"{name} {points[-1][1]:7.1f}" for name, points in series.items())
            report.line(
                f"t={t:6.0f}s sent {load.sent:>7} {dict(load.statuses)} errors {load.errors}"
                f"  RSS MiB: {rss}"
            )
        n += 1
        if done.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every)


async def settled(d: Deployment, keys: list[str], load: Load) -> int:
    """How many of the last requests were settled (inference ran, the quota agent settled
    them, the billing view has it), waiting up to 60 s for the pipeline to drain."""
    deadline = time.monotonic() + 60
    pending = list(load.last)
    done = 0
    while pending and time.monotonic() < deadline:
        rid, tenant = pending[0]
        auth = {"Authorization": f"Bearer {keys[tenant]}"}
        status, body = await call_once(d.port, "GET", f"/v1/requests/{rid}", auth)
        if status == 200 and orjson.loads(body)["status"] == "settled":
            pending.pop(0)
            done += 1
        else:
            await asyncio.sleep(0.5)
    return done


async def main(
    duration: float, rate: float, every: float, warmup: float, partitions: int, png: Path
) -> None:
    settings = Settings()
    report = Report("soak")
    report.add("rate_per_s", rate)
    report.add("duration_s", duration)
    report.add("warmup_s", warmup)
    d = prepare(partitions)
    try:
        await launch(d, settings, report)
        keys = await tenants(d)
        load = Load()
        pids = d.pids()
        series: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        initial = {name: tree_rss_mib(pid) for name, pid in pids.items()}
        report.line(f"load: {rate:g} requests/s for {duration:g} s; warm-up {warmup:g} s")
        t0 = time.monotonic()
        done = asyncio.Event()
        sampler = asyncio.create_task(sample(pids, every, series, t0, done, load, report))
        await send(d.port, keys, rate, duration, load)
        elapsed = time.monotonic() - t0
        done.set()
        await sampler
        for name, proc in d.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {d.logs}")
        report.add("requests", load.sent)
        report.add("ok_202", load.statuses.get("202", 0))
        report.add("errors", load.errors + sum(n for s, n in load.statuses.items() if s != "202"))
        report.add("achieved_per_s", len(load.latencies) / elapsed)
        lat = np.array(load.latencies or [float("nan")]) * 1000
        report.add("p50_ms", float(np.percentile(lat, 50)))
        report.add("p99_ms", float(np.percentile(lat, 99)))
        report.add(f"settled_of_last_{FOLLOWED}", await settled(d, keys, load))
        verdicts = {}
        for name, points in series.items():
            v = verdicts[name] = flatness(points, warmup)
            report.add(f"{name}_rss_initial_mib", initial[name])
            report.add(f"{name}_rss_start_mib", v.start_mib)
            report.add(f"{name}_rss_end_mib", v.end_mib)
            report.add(f"{name}_rss_max_mib", v.max_mib)
            report.add(f"{name}_rss_slope_mib_per_min", v.slope_mib_per_min)
            report.add(f"ratio_{name}_rss_end_vs_start", v.ratio)
            report.add(f"{name}_flat", v.flat)
            report.line(
                f"{name:<8} RSS {initial[name]:7.1f} MiB at launch, {v.start_mib:7.1f} after the "
                f"warm-up, {v.end_mib:7.1f} at the end ({v.growth_mib:+.1f} MiB, x{v.ratio:.3f}, "
                f"{v.slope_mib_per_min:+.2f} MiB/min): {'flat' if v.flat else 'GROWING'}"
            )
        report.add("flat", all(v.flat for v in verdicts.values()))
        report.add("samples", min(len(p) for p in series.values()))
        title = f"quotaflow soak: {rate:g} requests/s, {duration / 60:.1f} min"
        drawn = plot(series, warmup, png, title)
        report.line(f"plot: {png}" if drawn else "plot: skipped (matplotlib is not installed)")
        report.figures["plot"] = str(png) if drawn else None
    finally:
        await clean(d, settings)
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds left out of the verdict (default: a fifth of the duration, at most 60)",
    )
    parser.add_argument(
        "--partitions", type=int, default=None, help="default: QUOTAFLOW_PARTITIONS (4)"
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: in /tmp)")
    args = parser.parse_args()
    if not 10 <= args.duration <= 24 * 3600:
        parser.error("--duration must be within 10 s .. 24 h")
    if not 0 < args.rate <= 5_000:
        parser.error("--rate must be within 0 .. 5000")
    if not 0.5 <= args.sample_every <= args.duration / 4:
        parser.error("--sample-every must be within 0.5 s .. a quarter of the duration")
    warmup = min(60.0, args.duration / 5) if args.warmup is None else args.warmup
    if not 0 <= warmup < args.duration:
        parser.error("--warmup must be shorter than the duration")
    png = args.plot or Path(tempfile.gettempdir()) / f"soak-{uuid.uuid4().hex[:6]}.png"
    partitions = args.partitions or Settings().partitions
    asyncio.run(main(args.duration, args.rate, args.sample_every, warmup, partitions, png))
