"""``just bench-ingress``: open-loop HTTP load on ``POST /v1/requests`` at fixed rates.

Three processes on this machine, loopback only:

* the API: ``quotaflow serve`` (uvicorn, one process), started by the bench;
* the agents: ``quotaflow run quota quota-view tenant-directory`` (one process);
* the load: this process, a small keep-alive HTTP/1.1 client (raw asyncio streams, so the
  client costs little CPU) sending at fixed rates: request *i* is due at ``t0 + i / rate``
  whatever happened before (open loop), and its latency is counted from that due time to the
  complete response, so queueing anywhere (client included) shows in the numbers.

Each rate step sends ``rate × duration`` requests (model ``echo``, 16 tenants with budgets
that never run out) and reports the achieved rate and the request→decision latency (the
response is sent when the quota decision arrives); then the same load is sent to ``GET
/healthz`` of the same server as the baseline (the HTTP stack and the client alone), for the
``ratio_…`` figures. The server's own histograms (append, decision) are read from ``/metrics``
after each step. Progress goes to stderr; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from redis.asyncio import Redis

from bench.common import PROMPTS, Report
from quotaflow.settings import Settings
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TENANTS = 16
CONNECTIONS = 128
TIMEOUT_S = 10.0
_METRIC = re.compile(
    r"^quotaflow_ingress_(append|decision)_seconds_(sum|count)"
    r'(?:\{outcome="(\w+)"\})? (\S+)$'
)


@dataclass
class Step:
    name: str
    rate: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    elapsed: float = 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def http_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run_step(port: int, step: Step, requests: list[bytes], classify: bool) -> None:
    """Send ``requests`` at ``step.rate`` per second (open loop) over a pool of connections."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn: Connection | None = None
        try:
            while (item := await queue.get()) is not None:
                due, request = item
                if loop.time() - due > TIMEOUT_S:  # hopelessly late: count it, do not send it
                    step.errors += 1
                    continue
                try:
                    if conn is None:
                        conn = await Connection.open(port)
                    status, body = await conn.call(request)  # the step's deadline bounds it
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    step.errors += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                step.latencies.append(loop.time() - due)
                if classify and status == 202:
                    step.statuses["reserved" if b'"status":"reserved"' in body else "pending"] += 1
                else:
                    step.statuses[str(status)] += 1
        finally:
            if conn is not None:
                conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    start = loop.time() + 0.05
    interval = 1.0 / step.rate
    for i, request in enumerate(requests):
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, request))
    for _ in workers:
        queue.put_nowait(None)
    _, stuck = await asyncio.wait(workers, timeout=TIMEOUT_S + 5)
    for task in stuck:  # a response that never came: the request counts as an error
        task.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
    step.elapsed = loop.time() - start
    step.errors = len(requests) - len(step.latencies)


async def scrape(port: int) -> dict[str, float]:
    """The server's ingress histograms' sums and counts."""
    conn = await Connection.open(port)
    try:
        _, body = await conn.call(http_request("GET", "/metrics", {}))
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = _METRIC.match(line)
        if m:
            name, kind, outcome, value = m.groups()
            key = f"{name}_{outcome}_{kind}" if outcome else f"{name}_{kind}"
            out[key] = float(value)
    return out


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "quotaflow.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pgrep(name: str) -> list[str]:
    try:
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    return found.stdout.split()


def load_average() -> float:
    """The 1-minute load average: other work on the machine skews every figure here."""
    return os.getloadavg()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def call_once(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    conn = await Connection.open(port)
    try:
        return await asyncio.wait_for(conn.call(http_request(method, path, headers, body)), 30)
    finally:
        conn.close()


async def wait_ready(port: int, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a process exited; see {logs}")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            status, _ = await call_once(port, "GET", "/readyz", {})
            if status == 200:
                return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the API was not ready within 90 s; see {logs}")


def summary(report: Report, step: Step, prefix: str) -> None:
    lat = np.array(step.latencies) * 1000 if step.latencies else np.array([float("nan")])
    achieved = len(step.latencies) / step.elapsed if step.elapsed else 0.0
    report.add(f"{prefix}_{step.rate}_achieved_per_s", achieved)
    report.add(f"{prefix}_{step.rate}_p50_ms", float(np.percentile(lat, 50)))
    report.add(f"{prefix}_{step.rate}_p99_ms", float(np.percentile(lat, 99)))
    report.add(f"{prefix}_{step.rate}_max_ms", float(lat.max()))
    report.add(f"{prefix}_{step.rate}_errors", step.errors)
    report.line(
        f"{step.name:<9} {step.rate:>5}/s: achieved {achieved:>7,.0f}/s  p50 "
        f"{np.percentile(lat, 50):6.1f} ms  p99 {np.percentile(lat, 99):6.1f} ms  max "
        f"{lat.max():6.1f} ms  errors {step.errors}  {dict(step.statuses)}"
    )


async def main(
    rates: list[int], duration: float, baseline_duration: float, partitions: int | None
) -> None:
    settings = Settings()
    report = Report("ingress")
    run = uuid.uuid4().hex[:6]
    topo = Topology(partitions=partitions or settings.partitions, prefix=f"bench-{run}-")
    redis_prefix = f"bench-{run}:"
    admin_key = secrets.token_urlsafe(24)
    port = free_port()
    env = {
        "QUOTAFLOW_STREAM_PREFIX": topo.prefix,
        "QUOTAFLOW_PARTITIONS": str(topo.partitions),
        "QUOTAFLOW_REDIS_PREFIX": redis_prefix,
        "QUOTAFLOW_ADMIN_KEY": admin_key,
        "QUOTAFLOW_LOG_LEVEL": "WARNING",
    }
    logdir = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    log = RabbitEventLog(settings.stream_endpoint, name="bench-ingress")
    await App("bench", log, topology=topo).create_streams()
    agents = spawn(
        ["run", "quota", "quota-view", "tenant-directory", "--ownership", "static"],
        env,
        logdir / "agents.log",
    )
    server = spawn(["serve", "--host", HOST, "--port", str(port)], env, logdir / "server.log")
    try:
        await wait_ready(port, [agents, server], logdir)
        report.line(f"API on {HOST}:{port}, {topo.partitions} partitions, logs in {logdir}")
        admin = {"Authorization": f"Bearer {admin_key}"}
        keys = []
        for t in range(TENANTS):
            body = orjson.dumps(
                {
                    "tenant_id": f"tenant-{t}",
                    "name": f"Tenant {t}",
                    "policy": {"token_budget": 10**15},
                }
            )
            status, answer = await call_once(port, "POST", "/v1/admin/tenants", admin, body)
            if status != 201 or not orjson.loads(answer)["active"]:
                raise RuntimeError(f"tenant creation failed: {status} {answer[:200]!r}")
            keys.append(orjson.loads(answer)["api_key"])

        def posts(count: int) -> list[bytes]:
            out = []
            for i in range(count):
                body = orjson.dumps(
                    {"model": "echo", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 64}
                )
                headers = {"Authorization": f"Bearer {keys[i % TENANTS]}"}
                out.append(http_request("POST", "/v1/requests", headers, body))
            return out

        warm = Step("warm-up", 200)
        await run_step(port, warm, posts(400), classify=True)
        report.line(f"warm-up: {len(warm.latencies)} requests, {dict(warm.statuses)}")
        healthz = http_request("GET", "/healthz", {})
        broker = [int(pid) for pid in _pgrep("beam.smp")[:1]]
        for rate in rates:
            report.add(f"loadavg_before_{rate}", load_average())
            before = await scrape(port)
            pids = [server.pid, agents.pid, *broker]
            cpu = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
            step = Step("requests", rate)
            await run_step(port, step, posts(int(rate * duration)), classify=True)
            cpu_after = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
            after = await scrape(port)
            summary(report, step, "requests")
            done = max(len(step.latencies), 1)
            names = ["server", "agents", *(["rabbitmq"] if broker else []), "client"]
            for name, a, b in zip(names, cpu, cpu_after, strict=True):
                report.add(f"cpu_{name}_{rate}_ms_per_request", (b - a) / done * 1000)
            report.line(
                "          CPU ms/request: "
                + ", ".join(
                    f"{n} {report.figures[f'cpu_{n}_{rate}_ms_per_request']:.3f}" for n in names
                )
                + (" (rabbitmq: the whole broker, other users' streams included)" if broker else "")
            )
            report.add(f"requests_{rate}_reserved", step.statuses.get("reserved", 0))
            report.add(f"requests_{rate}_pending", step.statuses.get("pending", 0))
            for name in ("append", "decision_reserved"):
                n = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
                s = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
                if n:
                    report.add(f"server_{name}_{rate}_mean_ms", s / n * 1000)
            append_ms = report.figures.get(f"server_append_{rate}_mean_ms", float("nan"))
            decided_ms = report.figures.get(
                f"server_decision_reserved_{rate}_mean_ms", float("nan")
            )
            report.line(
                f"          server side: append mean {append_ms:.2f} ms, "
                f"append start → decision mean {decided_ms:.2f} ms"
            )
            base = Step("healthz", rate)
            server_cpu = cpu_seconds(server.pid)
            await run_step(port, base, [healthz] * int(rate * baseline_duration), classify=False)
            server_cpu = cpu_seconds(server.pid) - server_cpu
            summary(report, base, "healthz")
            per_request = server_cpu / max(len(base.latencies), 1) * 1000
            report.add(f"cpu_server_healthz_{rate}_ms_per_request", per_request)
            report.line(f"          CPU ms/request: server {per_request:.3f}")
            f = report.figures
            if f[f"healthz_{rate}_p99_ms"] > 0:
                report.add(
                    f"ratio_p99_requests_vs_healthz_{rate}",
                    f[f"requests_{rate}_p99_ms"] / f[f"healthz_{rate}_p99_ms"],
                )
            if f[f"healthz_{rate}_p50_ms"] > 0:
                report.add(
                    f"ratio_p50_requests_vs_healthz_{rate}",
                    f[f"requests_{rate}_p50_ms"] / f[f"healthz_{rate}_p50_ms"],
                )
            report.add(
                f"ratio_achieved_vs_offered_{rate}", f[f"requests_{rate}_achieved_per_s"] / rate
            )
    finally:
        stop(server)
        stop(agents)
        for topic in topo.all:
            for stream in topic.streams:
                with contextlib.suppress(Exception):
                    await log.delete_stream(stream)
        await log.close()
        redis = Redis.from_url(settings.redis_url)
        try:
            async for key in redis.scan_iter(match=f"{redis_prefix}*", count=1000):
                await redis.unlink(key)
        finally:
            await redis.aclose()
    report.add("loadavg_end", load_average())
    report.add("duration_s", duration)
    report.add("cpu_cores", os.cpu_count() or 0)
    report.emit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="500,1000,2000", help="requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per rate step")
    parser.add_argument(
        "--baseline-duration", type=float, default=10.0, help="seconds of /healthz per rate"
    )
    parser.add_argument(
        "--partitions", type=int, default=None, help="default: QUOTAFLOW_PARTITIONS (4)"
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if not rates or min(rates) < 1 or max(rates) > 20_000:
        parser.error("rates must be within 1..20000")
    if not 1 <= args.duration <= 600 or not 0 < args.baseline_duration <= 600:
        parser.error("durations must be within 1..600 s")
    try:
        import uvloop

        uvloop.install()  # the client's own CPU cost matters on 2 cores
    except ImportError:
        pass
    asyncio.run(main(rates, args.duration, args.baseline_duration, args.partitions))
