"""``python -m quotaflow.chaos``: load through the HTTP API while faults run, then the proof.

1. Starts a private deployment (``quotaflow.local``) with a Triton of its own.
2. Registers tenants through the admin API: most with room to spare, some that run out of
   budget or hit a requests-per-minute limit during the run.
3. Sends ``--requests`` echo requests at ``--rate`` (``quotaflow.chaos.load``) while the fault
   schedule (``quotaflow.chaos.faults``) kills every process and restarts the servers.
4. Waits until the log shows every reservation closed, then runs ``quotaflow audit``.
5. Prints what happened and the verdict; the last line is one JSON object. Exit 0 only with
   nothing lost, nothing counted twice, every client answered and a passing audit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from events import DecodeError, decode
from quotaflow.api_client import AdminApi
from quotaflow.chaos.faults import SERVER_FAULTS, Fault, Faults, schedule
from quotaflow.chaos.ledger import Ledger
from quotaflow.chaos.load import Client, Load, LoadReport
from quotaflow.chaos.picture import draw
from quotaflow.local import LocalSystem, local_system
from quotaflow.up import ROOT
from quotaflow.wiring import topology
from streams.log import Position, read_until_tail
from streams.rabbit_log import RabbitEventLog

console = Console(stderr=True)


@dataclass(frozen=True)
class Options:
    requests: int
    rate: float
    partitions: int
    seed: int
    kinds: list[str] | None
    extra_kills: int
    down_s: float
    drain_timeout_s: float
    flushall: bool
    keep: bool


def tenants(requests: int) -> dict[str, dict[str, Any]]:
    """Six roomy tenants, one whose budget lasts about a fifth of its share, one limited to
    a rate below what it is sent."""
    roomy = {f"t{i}": {"token_budget": 1_000_000_000, "reservation_ttl_s": 120} for i in range(6)}
    share = requests / 8
    return {
        **roomy,
        "small": {"token_budget": int(share * 70 / 5) + 1, "reservation_ttl_s": 120},
        "limited": {
            "token_budget": 1_000_000_000,
            "requests_per_minute": 600,
            "reservation_ttl_s": 120,
        },
    }


class LogReader:
    """Reads the deployment's requests and quota streams incrementally into a ledger."""

    def __init__(self, system: LocalSystem) -> None:
        topo = topology(system.settings)
        self.streams = [*topo.requests.streams, *topo.quota.streams]
        self.log = RabbitEventLog(system.settings.stream_endpoint, name="quotaflow-chaos")
        self.next: dict[str, int] = dict.fromkeys(self.streams, 0)
        self.ledger = Ledger()
        self.undecodable = 0

    async def catch_up(self) -> None:
        for stream in self.streams:
            async for records in read_until_tail(
                self.log, stream, Position.offset(self.next[stream])
            ):
                events = []
                for r in records:
                    try:
                        events.append(decode(r.data))
                    except DecodeError:
                        self.undecodable += 1
                self.ledger.add(events)
                self.next[stream] = records[-1].offset + 1

    async def close(self) -> None:
        await self.log.close()


async def register(admin: AdminApi, requests: int) -> list[Client]:
    clients = []
    for name, policy in tenants(requests).items():
        created = await admin.create_tenant(name, name, policy)
        clients.append(Client(name, created["api_key"]))
    return clients


@dataclass(frozen=True)
class FaultRun:
    """A fault as it happened: when (seconds into the load) and its error, if it failed."""

    fault: Fault
    at_s: float
    error: str | None


async def drive(
    system: LocalSystem, clients: list[Client], opts: Options
) -> tuple[LoadReport, list[FaultRun], list[Fault]]:
    duration = opts.requests / opts.rate
    plan = schedule(
        duration, seed=opts.seed, kinds=opts.kinds, extra_kills=opts.extra_kills, down_s=opts.down_s
    )
    faults = Faults(system, notify=lambda m: console.print(f"[yellow]{m}"), flushall=opts.flushall)
    ran: list[FaultRun] = []
    columns = (
        TextColumn("requests answered"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("load", total=opts.requests)
        load = Load(
            system.url,
            clients,
            opts.requests,
            opts.rate,
            run_id=system.name,
            seed=opts.seed,
            on_progress=lambda n: progress.update(task, completed=n),
        )
        started = time.monotonic()

        async def run_faults() -> None:
            for fault in plan:
                await asyncio.sleep(max(0.0, started + fault.at_s - time.monotonic()))
                at = time.monotonic() - started
                try:
                    await faults.cause(fault)
                except Exception as exc:  # reported, and the run then fails
                    console.print(f"[red]fault {fault} could not be caused: {exc!r}")
                    ran.append(FaultRun(fault, at, repr(exc)))
                else:
                    ran.append(FaultRun(fault, at, None))

        async def supervise() -> None:
            while True:
                try:
                    system.supervisor.poll()
                except Exception as exc:  # keep supervising; say why a restart failed
                    console.print(f"[red]supervisor: {exc!r}")
                await asyncio.sleep(0.25)

        keeper = asyncio.create_task(supervise())
        try:
            async with asyncio.TaskGroup() as group:  # one failing cancels the other
                loading = group.create_task(load.run())
                group.create_task(run_faults())
            report = loading.result()
        finally:
            keeper.cancel()
    return report, ran, plan


async def drain(
    system: LocalSystem, reader: LogReader, report: LoadReport, timeout_s: float
) -> float:
    """Until every reservation is closed and every 202 decided; seconds it took."""
    began = time.monotonic()
    acknowledged = report.acknowledged()
    with console.status("draining: waiting for every reservation to close…") as status:
        while True:
            system.supervisor.poll()
            await reader.catch_up()
            still_open = reader.ledger.open()
            undecided = reader.ledger.undecided(acknowledged)
            status.update(
                f"draining: {len(still_open)} open reservations, {len(undecided)} undecided"
            )
            if (not still_open and not undecided) or time.monotonic() - began > timeout_s:
                return time.monotonic() - began
            await asyncio.sleep(2.0)


def audit(system: LocalSystem, attempts: int = 6) -> tuple[bool, str]:
    """``quotaflow audit`` against the deployment (the views may trail the log a little)."""
    env = {**os.environ, **system.env}
    report = system.log_dir / "audit"
    out = ""
    for _ in range(attempts):
        done = subprocess.run(
            [sys.executable, "-m", "quotaflow.cli", "audit", "--report", str(report)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = done.stdout + done.stderr
        if done.returncode == 0:
            return True, out
        time.sleep(5)
    return False, out


async def billed_tokens(system: LocalSystem, names: list[str]) -> dict[str, int]:
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
    out = {}
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {system.admin_key}"}
        for name in names:
            r = await http.get(
                f"/v1/tenants/{name}/usage", params={"from": start, "to": end}, headers=headers
            )
            r.raise_for_status()
            out[name] = int(r.json()["total_tokens"])
    return out


async def chaos(opts: Options) -> int:
    name = "chaos-" + datetime.now(UTC).strftime("%H%M%S") + "-" + uuid.uuid4().hex[:4]
    system = local_system(
        name,
        partitions=opts.partitions,
        own_triton=True,
        notify=lambda n, m: console.print(f"[dim]{n}: {m}"),
        extra_env={"QUOTAFLOW_QUOTA_TICK_S": "5"},
    )
    console.rule(f"[bold]quotaflow chaos: {opts.requests:,} requests at {opts.rate:g}/s")
    system.supervisor.start()
    reader = LogReader(system)
    summary: dict[str, Any] = {"bench": "chaos", "requests": opts.requests}
    try:
        with console.status("starting the deployment…"):
            if not await system.wait_ready(300):
                console.print(f"[red]not ready; see {system.log_dir}")
                return 2
        async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
            clients = await register(AdminApi(http, system.admin_key), opts.requests)
        began = time.monotonic()
        report, ran, plan = await drive(system, clients, opts)
        load_s = time.monotonic() - began
        drain_s = await drain(system, reader, report, opts.drain_timeout_s)
        await asyncio.sleep(2.0)
        await reader.catch_up()
        with console.status("auditing: replaying the log and comparing the views…"):
            passed, audit_out = await asyncio.to_thread(audit, system)
        billed = await billed_tokens(system, [c.tenant_id for c in clients])
        summary |= verdict(reader, report, ran, plan, billed, passed, load_s, drain_s, opts)
        show(summary, audit_out)
        png = system.log_dir / "chaos.png"
        if draw(report.outcomes, [(r.at_s, r.fault.kind) for r in ran], png):
            console.print(f"picture: {png}")
            summary["picture"] = str(png)
    finally:
        await reader.close()
        with console.status("stopping…"):
            system.supervisor.stop()
        if not opts.keep:
            await system.clean()
    print(json.dumps(summary), flush=True)
    ok = summary.get("ok", False)
    return 0 if ok else 1


def verdict(
    reader: LogReader,
    report: LoadReport,
    ran: list[FaultRun],
    plan: list[Fault],
    billed: dict[str, int],
    passed: bool,
    load_s: float,
    drain_s: float,
    opts: Options,
) -> dict[str, Any]:
    ledger = reader.ledger
    lost = len(ledger.open()) + len(ledger.undecided(report.acknowledged()))
    log_tokens = ledger.settled_by_tenant()
    over = sum(max(0, billed.get(t, 0) - log_tokens.get(t, 0)) for t in billed)
    under = sum(max(0, log_tokens.get(t, 0) - billed.get(t, 0)) for t in log_tokens)
    double = ledger.double_counted_tokens() + over
    twice = ledger.twice()
    closed = ledger.closed_counts()
    out: dict[str, Any] = {
        "accepted": report.count("accepted"),
        "rejected": report.count("rejected"),
        "refused": report.count("refused"),
        "refused_examples": [o.detail[:160] for o in report.outcomes if o.kind == "refused"][:5],
        "unanswered": report.count("unanswered"),
        "reserved": len(ledger.reserved),
        "rejected_in_log": len(ledger.rejected),
        "completed": len(ledger.completed),
        "failed": len(ledger.failed),
        "settled": closed.get("settled", 0),
        "released": closed.get("ReservationReleased", 0),
        "expired": closed.get("ReservationExpired", 0),
        "requests_appended_twice": sum(1 for n in ledger.requested.values() if n > 1),
        "lost": lost,
        "double_counted_tokens": double,
        "billed_below_log_tokens": under,
        **twice,
        "audit": "pass" if passed else "FAIL",
        "told_429_but_reserved": sum(
            1
            for o in report.outcomes
            if o.kind == "rejected" and ledger.reserved[str(o.request_id)]
        ),
        "faults": sum(1 for r in ran if r.error is None),
        "faults_failed": len(plan) - sum(1 for r in ran if r.error is None),
        "fault_kinds": sorted({r.fault.kind for r in ran if r.error is None}),
        "fault_times_s": [[round(r.at_s, 1), r.fault.kind] for r in ran],
        "retries": sum(report.retried_because.values()),
        "retried_because": dict(report.retried_because),
        "load_s": round(load_s, 1),
        "drain_s": round(drain_s, 1),
        "achieved_per_s": round(opts.requests / load_s, 1),
        "target_per_s": opts.rate,
    }
    out["ok"] = (
        lost == 0
        and double == 0
        and under == 0
        and passed
        and not any(twice.values())
        and out["refused"] == 0
        and out["unanswered"] == 0
        and out["told_429_but_reserved"] == 0
        and out["faults_failed"] == 0
    )
    return out


def show(summary: dict[str, Any], audit_out: str) -> None:
    table = Table(title="chaos: what happened")
    table.add_column("")
    table.add_column("count", justify="right")
    labels = {
        "accepted": "answered 202 (reserved or pending)",
        "rejected": "answered 429",
        "refused": "answered another 4xx",
        "unanswered": "never answered",
        "retries": "client retries (same Idempotency-Key)",
        "reserved": "reserved (log)",
        "rejected_in_log": "rejected (log)",
        "completed": "completed (log)",
        "failed": "failed (log)",
        "settled": "settled (log)",
        "released": "released (log)",
        "expired": "expired (log)",
        "faults": "faults",
    }
    for key, label in labels.items():
        table.add_row(label, f"{summary[key]:,}")
    for key in (
        "lost",
        "double_counted_tokens",
        "billed_below_log_tokens",
        "decided_twice",
        "closed_twice",
        "told_429_but_reserved",
        "faults_failed",
    ):
        style = "green" if summary[key] == 0 else "red"
        table.add_row(f"[bold]{key}", f"[{style}]{summary[key]:,}")
    table.add_row("[bold]audit", "[green]pass" if summary["audit"] == "pass" else "[red]FAIL")
    console.print(table)
    if summary["audit"] != "pass":
        console.print(audit_out[-4000:])
    console.rule(
        "[bold green]nothing lost, nothing counted twice" if summary["ok"] else "[bold red]FAILED"
    )


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m quotaflow.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--faults",
        help="comma-separated kinds (default: every kind once), e.g. "
        "kill:quota,redis-flush; kinds: kill:<process>, " + ", ".join(SERVER_FAULTS),
    )
    p.add_argument("--extra-kills", type=int, default=6, help="random SIGKILLs beyond one each")
    p.add_argument("--down-s", type=float, default=15.0, help="how long Triton stays down")
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument(
        "--flushall",
        action="store_true",
        help="FLUSHALL the Redis instead of deleting this deployment's keys",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's streams, keys and schema")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.faults.split(",") if k.strip()] if a.faults is not None else None
    return Options(
        a.requests,
        a.rate,
        a.partitions,
        a.seed,
        kinds,
        a.extra_kills,
        a.down_s,
        a.drain_timeout,
        a.flushall,
        a.keep,
    )


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(chaos(parse(argv)))
