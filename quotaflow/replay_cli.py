"""``quotaflow replay quota|billing`` and ``quotaflow audit``.

``ops_cli`` is mounted on the main CLI without a name, so ``replay`` (a group) and ``audit``
are top-level commands. Exit codes: 0 success (audit: everything agrees), 1 failure (audit:
something differs), 2 usage or configuration error (a bad flag, a missing stream, a server
that cannot be reached).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from quotaflow.settings import Settings

T = TypeVar("T")

ops_cli = typer.Typer(add_completion=False)
replay_cli = typer.Typer(
    help="Rebuild a view from the log into a scratch target, and optionally swap it in.",
    no_args_is_help=True,
)
ops_cli.add_typer(replay_cli, name="replay")

FromOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--from",
        help="start: an ISO time (stored at or after, every stream) or STREAM:OFFSET "
        "(e.g. requests-0:1200, inclusive); repeatable",
    ),
]
ToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--to", help="end, inclusive: an ISO time or STREAM:OFFSET; repeatable (default: tails)"
    ),
]
SwapOpt = Annotated[
    bool,
    typer.Option(
        "--swap",
        help="then catch up with the log and make the rebuilt view the live one; the live "
        "agents may keep running (they continue from the rebuilt view's positions)",
    ),
]
BatchOpt = Annotated[int, typer.Option(min=100, max=200_000, help="events per apply")]
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s", style="progress.data.speed")


@contextmanager
def _progress(label: str) -> Iterator[tuple[Progress, Any]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield progress, progress.add_task(label, total=None)


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _run(coro: Awaitable[T]) -> T:
    """Run ``coro``; unreachable servers and missing streams are configuration errors."""
    from psycopg import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from projections.audit.bounds import BoundError
    from streams.log import StreamNotFound

    async def go() -> T:
        return await coro

    try:
        return asyncio.run(go())
    except StreamNotFound as exc:
        raise _usage(f"stream {exc} does not exist: run `quotaflow streams create`") from None
    except BoundError as exc:
        raise _usage(str(exc)) from None
    except (OperationalError, RedisConnectionError, OSError) as exc:
        raise _usage(f"cannot reach a server: {exc}") from None


# --- replay ---------------------------------------------------------------------------------


@replay_cli.command("quota")
def replay_quota(
    from_: FromOpt = None,
    to: ToOpt = None,
    into: Annotated[
        str | None, typer.Option(help="scratch key prefix (default: <live prefix>replay:)")
    ] = None,
    swap: SwapOpt = False,
    batch: BatchOpt = 20_000,
) -> None:
    """Rebuild the Redis quota view under a scratch key prefix."""
    from redis.asyncio import Redis

    from projections.quota_rebuild import QuotaTarget, scratch_prefix

    settings = Settings()
    prefix = scratch_prefix(into or settings.redis_prefix + "replay:")

    async def go() -> None:
        redis = Redis.from_url(settings.redis_url)
        try:
            try:
                target = QuotaTarget(redis, _topology(settings), settings.redis_prefix, prefix)
            except ValueError as exc:
                raise _usage(str(exc)) from None
            await _replay(settings, target, from_ or [], to or [], swap, batch)
        finally:
            await redis.aclose()

    _run(go())


@replay_cli.command("billing")
def replay_billing(
    from_: FromOpt = None,
    to: ToOpt = None,
    into: Annotated[
        str | None, typer.Option(help="scratch schema (default: <live schema>_replay)")
    ] = None,
    swap: SwapOpt = False,
    batch: BatchOpt = 20_000,
) -> None:
    """Rebuild the PostgreSQL billing view into a scratch schema."""
    from psycopg import AsyncConnection

    from projections.audit.rebuild import BillingTarget

    settings = Settings()
    schema = into or f"{settings.billing_schema}_replay"
    if not _SCHEMA.match(schema) or schema == settings.billing_schema:
        raise _usage(f"--into {schema!r}: a schema name other than {settings.billing_schema!r}")

    async def go() -> None:
        dsn = settings.postgres_dsn
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            target = BillingTarget(conn, dsn, _topology(settings), settings.billing_schema, schema)
            await _replay(settings, target, from_ or [], to or [], swap, batch)

    _run(go())


def _topology(settings: Settings) -> Any:
    from quotaflow.wiring import topology

    return topology(settings)


async def _replay(
    settings: Settings, target: Any, start: list[str], stop: list[str], swap: bool, batch: int
) -> None:
    from projections.audit.bounds import parse_bound, resolve
    from projections.audit.logread import tails
    from projections.audit.rebuild import RebuildStats, describe_ends, rebuild, swap_in
    from quotaflow.wiring import event_log

    if swap and (start or stop):
        raise _usage("--swap rebuilds the whole log: it cannot be combined with --from/--to")
    topo = _topology(settings)
    log = event_log(settings, name="quotaflow-replay")
    deadletter = topo.deadletter.stream(0)
    try:
        found = await tails(log, [*target.streams, deadletter])
        starts, ends = await resolve(
            log,
            target.streams,
            found,
            [parse_bound(b) for b in start],
            [parse_bound(b) for b in stop],
            topo.prefix,
        )
        for line in describe_ends(ends, starts):
            typer.echo(f"  {line}", err=True)
        total = sum(
            max(0, ends[s] - (starts[s].value if starts[s].kind == "offset" else 0))
            for s in target.streams
        )
        stats = RebuildStats()
        began = time.perf_counter()
        with _progress(f"rebuilding {target.kind} into {target.description}") as (bar, task):
            bar.update(task, total=total)
            await rebuild(
                log,
                target,
                starts,
                ends,
                deadletter=deadletter,
                batch=batch,
                stats=stats,
                advance=lambda n: bar.advance(task, n),
            )
        seconds = time.perf_counter() - began
        rate = stats.read.records / seconds if seconds > 0 else 0.0
        typer.echo(
            f"rebuilt the {target.kind} view into {target.description}: "
            f"{stats.read.records:,} records read, {stats.applied:,} events applied in "
            f"{seconds:.1f} s ({rate:,.0f} records/s)"
        )
        if stats.read.undecodable:
            typer.echo(f"  {len(stats.read.undecodable)} undecodable record(s) skipped", err=True)
        if swap:
            result = await swap_in(log, target, deadletter=deadletter, stats=stats)
            typer.echo(
                f"swapped: {target.description} is now the live view "
                f"({target.live_description}); {result.detail}"
            )
    finally:
        await log.close()


# --- audit ----------------------------------------------------------------------------------


def _period(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise _usage(f"--period {value!r}: a month, YYYY-MM") from None


@ops_cli.command("audit")
def audit_cmd(
    tenant: Annotated[str | None, typer.Option(help="audit one tenant")] = None,
    period: Annotated[
        str | None, typer.Option(help="one billing period, YYYY-MM (UTC month)")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="write PATH.json and PATH.html (or the one PATH's suffix names, and the "
            "other beside it)"
        ),
    ] = None,
    billing: Annotated[
        bool, typer.Option("--billing/--no-billing", help="compare the billing view")
    ] = True,
    quota: Annotated[
        bool, typer.Option("--quota/--no-quota", help="compare the quota view")
    ] = True,
) -> None:
    """Prove the views equal the events: exit 0 if all agrees, 1 if not, 2 on a usage error.

    Replays the log, recomputes every tenant's usage, reservations and invoices, re-executes
    every quota decision, checks the log's invariants and compares the live views.
    """
    from psycopg import AsyncConnection
    from redis.asyncio import Redis

    from projections.audit import AuditOptions, audit
    from projections.audit.report import summary_lines, write
    from projections.quota_view import QuotaView
    from quotaflow.wiring import event_log

    settings = Settings()
    options = AuditOptions(tenant=tenant, period=_period(period))
    topo = _topology(settings)

    async def go() -> Any:
        log = event_log(settings, name="quotaflow-audit")
        redis = Redis.from_url(settings.redis_url) if quota else None
        conn = (
            await AsyncConnection.connect(settings.postgres_dsn, autocommit=True)
            if billing
            else None
        )
        try:
            with _progress("auditing") as (bar, task):

                def phase(what: str, total: int | None) -> None:
                    bar.update(task, description=what)
                    if total:
                        bar.update(task, total=total)

                return await audit(
                    log,
                    topo,
                    options,
                    billing=None if conn is None else (conn, settings.billing_schema),
                    quota=None if redis is None else QuotaView(redis, settings.redis_prefix),
                    advance=lambda n: bar.advance(task, n),
                    phase=phase,
                )
        finally:
            await log.close()
            if redis is not None:
                await redis.aclose()
            if conn is not None:
                await conn.close()

    result = _run(go())
    console = Console()
    table = Table(title="audit")
    for col in ("check", "result", "checked", "failed"):
        table.add_column(col, justify="right" if col in ("checked", "failed") else "left")
    for name, tally in result.findings.tallies.items():
        verdict = "[green]ok" if tally.failed == 0 else "[red]FAILED"
        table.add_row(name, verdict, f"{tally.checked:,}", f"{tally.failed:,}")
    console.print(table)
    for line in summary_lines(result):
        typer.echo(line)
    for warning in result.findings.warnings:
        typer.echo(f"warning: {warning}", err=True)
    t = result.timings
    rate = result.stats.events / t.total_s if t.total_s else 0.0
    typer.echo(
        f"{result.stats.records:,} records, {result.stats.events:,} events audited in "
        f"{t.total_s:.1f} s ({rate:,.0f} events/s)"
    )
    if report is not None:
        json_path, html_path = write(result, report)
        typer.echo(f"report: {json_path} {html_path}")
    typer.echo(
        "everything agrees" if result.ok else f"{len(result.findings.discrepancies)} discrepancies"
    )
    raise typer.Exit(0 if result.ok else 1)
