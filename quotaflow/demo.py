"""``just demo``: the whole pipeline on this machine, end to end, in a few minutes.

Starts Triton (if nothing answers on the Triton URL), runs every agent in this process
against the real RabbitMQ, Redis and PostgreSQL, registers three tenants (one with a tiny
budget), sets prices, sends a mix of real SmolLM2 requests and cheap ``echo`` load, then
shows the decisions (with the rejections an HTTP client gets as 429), the model's answers,
the Redis quota view and the PostgreSQL invoices. Everything lives under a per-run stream
prefix, Redis prefix and PostgreSQL schema, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import secrets
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from psycopg import AsyncConnection, sql
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from events import (
    AnyEvent,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    QuotaPolicy,
    RequestRejected,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)
from events.model import SYSTEM_TENANT, RequestSpec
from projections.billing import invoice
from projections.quota_view import QuotaView
from quotaflow import logs
from quotaflow.settings import Settings
from quotaflow.tokens import estimate
from quotaflow.wiring import build_app
from streams.log import Position, read_until_tail
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner

console = Console()
QUESTIONS = [
    "What is the capital of France?",
    "Give me one tip for writing clear code.",
    "Name three colours of the rainbow.",
]


async def triton_reachable(url: str) -> bool:
    host, _, port = url.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    return True


def tenant(name: str, policy: QuotaPolicy) -> tuple[TenantRegistered, str]:
    key = "qf_" + secrets.token_urlsafe(24)
    event = TenantRegistered(
        tenant_id=name,
        name=name.title(),
        api_key_hash=hashlib.sha256(key.encode()).hexdigest(),
        policy=policy,
    )
    return event, key


def request(
    tenant_id: str, model: str, prompt: str, max_tokens: int, priority: int = 0
) -> InferenceRequested:
    est = estimate(model, prompt, None, max_tokens)
    return InferenceRequested(
        tenant_id=tenant_id,
        request_id=uuid.uuid4(),
        spec=RequestSpec(model=model, prompt=prompt, max_tokens=max_tokens, priority=priority),
        estimated_prompt_tokens=est.prompt_tokens,
    )


async def read_topic(app: App, streams: list[str]) -> list[AnyEvent]:
    from events import decode

    out: list[AnyEvent] = []
    for stream in streams:
        async for records in read_until_tail(app.log, stream, Position.first()):
            out.extend(decode(r.data) for r in records)
    return out


async def main(keep: bool, echo_requests: int) -> None:
    logs.configure("WARNING")
    run = datetime.now(UTC).strftime("%H%M%S") + "-" + uuid.uuid4().hex[:4]
    base = Settings()
    settings = base.model_copy(
        update={
            "stream_prefix": f"demo-{run}-",
            "redis_prefix": f"demo-{run}:",
            "billing_schema": f"demo_{run.replace('-', '_')}",
        }
    )
    console.rule("[bold]quotaflow demo")
    console.print(
        f"streams [cyan]{settings.stream_prefix}*[/], Redis [cyan]{settings.redis_prefix}*[/], "
        f"PostgreSQL schema [cyan]{settings.billing_schema}[/]"
    )
    triton = None
    if not await triton_reachable(settings.triton_url):
        from quotaflow.triton.server import TritonOptions, astart_triton

        console.print("starting Triton (tritonserver from nvidia-pytriton, models: smollm2, echo)…")
        port = settings.triton_url.rpartition(":")[2]
        triton = await astart_triton(
            TritonOptions(
                model_repository=Path("triton_models"),
                grpc_port=int(port),
                http_port=int(port) - 1,
                metrics_port=int(port) + 1,
            ),
            log_path=Path("var/demo-triton.log"),
        )
    app = build_app(settings)
    await app.create_streams()
    stop = asyncio.Event()
    runner = AgentRunner(app, sorted(app.agents), StaticOwnership(), interval=0.2)
    agents = asyncio.create_task(runner.run(stop))
    console.print(f"agents running: {', '.join(sorted(app.agents))}")
    requests_topic = app.topic(app.topology.requests)
    try:
        tenants = {
            "acme": tenant("acme", QuotaPolicy(token_budget=2_000_000, tokens_per_minute=500_000)),
            "globex": tenant("globex", QuotaPolicy(token_budget=1_000_000, requests_per_minute=60)),
            "tiny": tenant("tiny", QuotaPolicy(token_budget=400)),
        }
        for event, _ in tenants.values():
            await requests_topic.send(event)
        catalog = app.topic(app.topology.catalog)
        await catalog.send(
            PriceSet(
                tenant_id=SYSTEM_TENANT,
                model="smollm2",
                prompt_per_1k=Decimal("0.50"),
                completion_per_1k=Decimal("1.50"),
            )
        )
        await catalog.send(
            PriceSet(
                tenant_id=SYSTEM_TENANT,
                model="echo",
                prompt_per_1k=Decimal("0.10"),
                completion_per_1k=Decimal("0.20"),
            )
        )
        console.print(
            "registered tenants [green]acme[/] (2M tokens), [green]globex[/] (60 requests/min), "
            "[yellow]tiny[/] (400 tokens); prices set"
        )

        rng = random.Random(1)
        sent: list[InferenceRequested] = [
            request("acme", "smollm2", q, 24, priority=9) for q in QUESTIONS
        ]
        for i in range(echo_requests):
            who = rng.choice(["acme", "globex", "tiny"])
            sent.append(request(who, "echo", f"load {i}: {rng.random():.6f}", rng.randint(8, 64)))
        started = time.monotonic()
        await requests_topic.send_many(sent)
        console.print(f"sent {len(sent)} requests ({len(QUESTIONS)} to SmolLM2, the rest to echo)")

        ids = {r.request_id for r in sent}
        decided: dict[uuid.UUID, AnyEvent] = {}
        finished: dict[uuid.UUID, AnyEvent] = {}
        with console.status("waiting for decisions, inference and settlement…"):
            while time.monotonic() - started < 240:
                for e in await read_topic(app, app.topology.quota.streams):
                    if isinstance(e, TokensReserved | RequestRejected) and e.request_id in ids:
                        decided[e.request_id] = e
                    if isinstance(e, ReservationSettled) and e.request_id in ids:
                        finished[e.request_id] = e
                reserved = sum(isinstance(e, TokensReserved) for e in decided.values())
                if len(decided) == len(ids) and len(finished) >= reserved:
                    break
                await asyncio.sleep(1)
        await asyncio.sleep(1.5)  # let the projections catch up

        table = Table(title="quota decisions (what POST /v1/requests answers)")
        for col in ("tenant", "202 reserved", "429 rejected", "reasons"):
            table.add_column(col)
        by_tenant: dict[str, Counter[str]] = {}
        for e in decided.values():
            c = by_tenant.setdefault(e.tenant_id, Counter())
            c[
                "reserved"
                if isinstance(e, TokensReserved)
                else f"rejected:{getattr(e, 'reason', '')}"
            ] += 1
        for name, c in sorted(by_tenant.items()):
            reasons = ", ".join(
                f"{k.split(':')[1]} ×{v}" for k, v in c.items() if k.startswith("rejected")
            )
            table.add_row(
                name,
                str(c["reserved"]),
                str(sum(v for k, v in c.items() if k != "reserved")),
                reasons or "—",
            )
        console.print(table)

        answers = Table(title="SmolLM2 answers (through Triton)")
        for col in ("question", "answer", "prompt+completion tokens"):
            answers.add_column(col)
        results = {
            e.request_id: e
            for e in await read_topic(app, app.topology.requests.streams)
            if isinstance(e, InferenceCompleted | InferenceFailed)
        }
        for r in sent[: len(QUESTIONS)]:
            res = results.get(r.request_id)
            if isinstance(res, InferenceCompleted):
                answers.add_row(
                    r.spec.prompt or "",
                    res.text.strip(),
                    f"{res.prompt_tokens}+{res.completion_tokens}",
                )
            else:
                answers.add_row(
                    r.spec.prompt or "", f"[red]{getattr(res, 'reason', 'no result')}", ""
                )
        console.print(answers)

        redis = Redis.from_url(settings.redis_url)
        view = QuotaView(redis, settings.redis_prefix)
        quota_table = Table(title="Redis quota view (GET /v1/tenants/{t}/quota)")
        for col in ("tenant", "budget", "used", "reserved", "remaining", "open", "rejected"):
            quota_table.add_column(col, justify="right")
        for name in tenants:
            q = await view.tenant(name)
            if q is not None:
                quota_table.add_row(
                    name,
                    f"{q.budget:,}",
                    f"{q.used:,}",
                    f"{q.reserved:,}",
                    f"{q.remaining:,}",
                    str(q.open_reservations),
                    str(q.rejected),
                )
        console.print(quota_table)
        await redis.aclose()

        bill = Table(
            title="PostgreSQL billing view: invoices this month"
            " (GET /v1/tenants/{t}/invoices/{period})"
        )
        for col in ("tenant", "model", "prompt tokens", "completion tokens", "amount"):
            bill.add_column(col, justify="right")
        period = date.today().replace(day=1)
        async with await AsyncConnection.connect(settings.postgres_dsn) as conn:
            for name in tenants:
                inv = await invoice(conn, name, period, schema=settings.billing_schema)
                for line in inv.lines:
                    bill.add_row(
                        name,
                        line.model,
                        f"{line.prompt_tokens:,}",
                        f"{line.completion_tokens:,}",
                        f"{line.amount} {inv.currency}",
                    )
                bill.add_row(name, "[bold]total", "", "", f"[bold]{inv.total} {inv.currency}")
        console.print(bill)
        console.rule("[bold green]done")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agents, 60)
        if not keep:
            await cleanup(app, settings)
        await app.close()
        if triton is not None:
            await triton.astop()


async def cleanup(app: App, settings: Settings) -> None:
    for topic in app.topology.all:
        for stream in topic.streams:
            await app.log.delete_stream(stream)  # type: ignore[attr-defined]
    redis = Redis.from_url(settings.redis_url)
    await QuotaView(redis, settings.redis_prefix).clear()
    keys = [k async for k in redis.scan_iter(match=settings.redis_prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(settings.billing_schema)
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo's streams, keys and schema"
    )
    parser.add_argument("--echo-requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.keep, args.echo_requests))
