"""``just demo``: the whole system on this machine, driven through its HTTP API.

Starts what ``quotaflow up`` starts (the ingress, every agent as its own process, and Triton if
nothing answers on the Triton URL) under a private stream prefix, Redis prefix, billing schema,
HTTP port and admin key. Then, as a client would: registers three tenants (one with a tiny
budget) and the model prices, sends real SmolLM2 questions and a burst of cheap ``echo`` load,
shows the 429s, follows the accepted requests to settlement, prints the answers, the Redis
quota view and the PostgreSQL billing view, and stops every process. Its data is removed at
the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quotaflow.api_client import AdminApi, TenantApi
from quotaflow.demo_tables import answers_table, billing_table, decisions_table, quota_table
from quotaflow.local import LocalSystem, local_system
from quotaflow.supervisor import exit_status

console = Console()
QUESTIONS = [
    "What is the capital of France?",
    "Give me one tip for writing clear code.",
    "Name three colours of the rainbow.",
]
TENANTS: dict[str, dict[str, Any]] = {
    "acme": {"token_budget": 2_000_000, "tokens_per_minute": 500_000},
    "globex": {"token_budget": 1_000_000, "requests_per_minute": 60},
    "tiny": {"token_budget": 400},
}
PRICES = {"smollm2": (Decimal("0.50"), Decimal("1.50")), "echo": (Decimal("0.10"), Decimal("0.20"))}
FINAL = {"settled", "released", "expired", "failed", "rejected"}


async def register(admin: AdminApi, client: httpx.AsyncClient) -> dict[str, TenantApi]:
    out = {}
    for name, policy in TENANTS.items():
        created = await admin.create_tenant(name, name.title(), policy)
        out[name] = TenantApi(client, name, created["api_key"])
    for model, (prompt, completion) in PRICES.items():
        await admin.set_price(model, prompt, completion)
    return out


async def send_all(
    tenants: dict[str, TenantApi], echo_requests: int
) -> list[tuple[str, dict[str, Any], httpx.Response]]:
    """The SmolLM2 questions (acme, priority 9) and the echo burst, 32 at a time."""
    rng = random.Random(1)
    work: list[tuple[str, dict[str, Any]]] = [
        ("acme", {"model": "smollm2", "prompt": q, "max_tokens": 24, "priority": 9})
        for q in QUESTIONS
    ]
    for i in range(echo_requests):
        who = rng.choice(list(TENANTS))
        body = {"model": "echo", "prompt": f"load {i}: {rng.random():.6f}", "max_tokens": 32}
        work.append((who, body))
    gate = asyncio.Semaphore(32)
    columns = (TextColumn("POST /v1/requests"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("send", total=len(work))

        async def one(who: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], httpx.Response]:
            async with gate:
                r = await tenants[who].submit(body)
                progress.advance(task)
                return who, body, r

        return list(await asyncio.gather(*(one(w, b) for w, b in work)))


def finished(view: dict[str, Any] | None) -> bool:
    """Closed, and its text shown if it completed (the text is another projection's)."""
    if view is None or view["status"] not in FINAL:
        return False
    return view["completed_at"] is None or bool(view["text"])


async def follow(
    tenants: dict[str, TenantApi], accepted: list[tuple[str, str]], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """GET /v1/requests/{id} until every accepted request is settled, released or failed."""
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("inference → settlement"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("follow", total=len(accepted))
        while time.monotonic() < deadline:
            todo = [(w, rid) for w, rid in accepted if not finished(views.get(rid))]
            if not todo:
                break
            for who, rid in todo:
                views[rid] = await tenants[who].request(rid)
            done = sum(1 for v in views.values() if finished(v))
            progress.update(task, completed=done)
            await asyncio.sleep(1.0)
    return views


async def run_demo(system: LocalSystem, echo_requests: int) -> bool:
    async with httpx.AsyncClient(base_url=system.url, timeout=60.0) as client:
        admin = AdminApi(client, system.admin_key)
        tenants = await register(admin, client)
        console.print(
            "registered [green]acme[/] (2M tokens, 500k tokens/min), [green]globex[/] "
            "(60 requests/min), [yellow]tiny[/] (400 tokens); prices set for smollm2 and echo"
        )
        results = await send_all(tenants, echo_requests)
        console.print(decisions_table(results))
        accepted = [(who, r.json()["request_id"]) for who, _, r in results if r.status_code == 202]
        views = await follow(tenants, accepted, timeout_s=300)
        states = Counter(v["status"] for v in views.values())
        console.print("accepted requests now: " + ", ".join(f"{k} {v}" for k, v in states.items()))
        questions = [
            (b["prompt"], views.get(r.json()["request_id"]))
            for _, b, r in results
            if b["model"] == "smollm2" and r.status_code == 202
        ]
        console.print(answers_table(questions))
        await asyncio.sleep(1.0)  # the projections trail the settlements by a batch
        console.print(quota_table({n: await t.quota() for n, t in tenants.items()}))
        today = datetime.now(UTC).date()
        usage = {
            n: await t.usage(today.replace(day=1).isoformat(), (today + timedelta(1)).isoformat())
            for n, t in tenants.items()
        }
        invoices = {n: await t.invoice(today.strftime("%Y-%m")) for n, t in tenants.items()}
        console.print(billing_table(usage, invoices))
        return states["settled"] > 0 and all(s in FINAL for s in states)


async def supervise(system: LocalSystem) -> None:
    """Restart what dies while the demo runs (as ``quotaflow up`` does)."""
    while True:
        system.supervisor.poll()
        await asyncio.sleep(0.5)


async def main(keep: bool, echo_requests: int) -> int:
    name = "demo-" + datetime.now(UTC).strftime("%H%M%S") + "-" + uuid.uuid4().hex[:4]
    system = local_system(name, notify=lambda n, m: console.print(f"[dim]{n}: {m}[/]"))
    console.rule("[bold]quotaflow demo")
    console.print(
        f"private deployment [cyan]{name}[/]: API {system.url}, logs {system.log_dir}/"
        + (" (starting Triton: smollm2 and echo)" if system.runs_triton else "")
    )
    system.supervisor.start()
    keeper = asyncio.create_task(supervise(system))
    ok = False
    try:
        with console.status("waiting for the API, the agents and Triton…"):
            ready = await system.wait_ready(timeout_s=300)
        if not ready:
            console.print(f"[red]the system did not become ready; see {system.log_dir}/*.log")
            return 1
        ok = await run_demo(system, echo_requests)
    finally:
        keeper.cancel()
        with console.status("stopping every process…"):
            codes = system.supervisor.stop()
        console.print("stopped: " + ", ".join(f"{n} {exit_status(c)}" for n, c in codes.items()))
        if not keep:
            await system.clean()
    console.rule("[bold green]done" if ok else "[bold red]something did not finish")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo's streams, keys, schema")
    parser.add_argument("--echo-requests", type=int, default=300)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.keep, args.echo_requests)))
