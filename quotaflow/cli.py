"""The ``quotaflow`` command."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated

import typer

from quotaflow import logs
from quotaflow.replay_cli import ops_cli
from quotaflow.settings import Settings
from quotaflow.tenants_cli import tenants_cli
from quotaflow.up_cli import up_cli
from quotaflow.wiring import load_factory, ownership

cli = typer.Typer(
    name="quotaflow",
    help="Event-sourced streaming for ML inference with exact token quotas.",
    no_args_is_help=True,
    add_completion=False,
)
streams_cli = typer.Typer(help="The event log's streams.", no_args_is_help=True)
events_cli = typer.Typer(help="The event model.", no_args_is_help=True)
cli.add_typer(streams_cli, name="streams")
cli.add_typer(events_cli, name="events")
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(up_cli)  # `up` (quotaflow/up_cli.py)
cli.add_typer(ops_cli)  # `replay quota|billing` and `audit` (quotaflow/replay_cli.py)

FactoryOpt = Annotated[
    str, typer.Option(help="module:function building the App (default: every quotaflow agent)")
]


@cli.command()
def run(
    agents: Annotated[list[str], typer.Argument(help="agent names (one per pod in Kubernetes)")],
    factory: FactoryOpt = "quotaflow.wiring:build_app",
    owner: Annotated[
        str,
        typer.Option(
            "--ownership", help="pg: share partitions with other replicas; static: own all"
        ),
    ] = "pg",
) -> None:
    """Run agents until SIGTERM/SIGINT, then drain in-flight work and stop."""
    from quotaflow.observability.config import ObservabilitySettings
    from quotaflow.observability.logconfig import configure_logging
    from quotaflow.observability.server import start_metrics_server, watched

    settings = Settings()
    # structured JSON lines (QUOTAFLOW_LOG_FORMAT=console for people); keys are redacted
    configure_logging(secrets=[settings.admin_key.get_secret_value()])
    observability = ObservabilitySettings()
    # /metrics, /healthz, /readyz on QUOTAFLOW_METRICS_PORT (default 9100; 0: off)
    metrics = start_metrics_server(observability.metrics_port, observability.metrics_host)
    try:
        asyncio.run(watched(metrics, _run(settings, factory, agents, owner)))
    finally:
        if metrics is not None:
            metrics.close()


async def _run(settings: Settings, factory: str, agents: list[str], owner: str) -> None:
    from streams.runtime.runner import AgentRunner

    app = load_factory(factory)(settings)
    unknown = sorted(set(agents) - set(app.agents))
    if unknown:
        raise typer.BadParameter(
            f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(sorted(app.agents))}"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.create_streams()
    try:
        await AgentRunner(app, agents, ownership(settings, owner)).run(stop)
    finally:
        await app.close()


@streams_cli.command("create")
def streams_create(factory: FactoryOpt = "quotaflow.wiring:build_app") -> None:
    """Declare every stream of the topology (idempotent)."""
    settings = Settings()

    async def go() -> None:
        app = load_factory(factory)(settings)
        await app.create_streams()
        await app.log.close()
        for topic in app.topology.all:
            typer.echo(f"{topic.name}: {', '.join(topic.streams)}")

    asyncio.run(go())


@cli.command()
def publish(
    file: Annotated[
        typer.FileText,
        typer.Argument(help="JSON Lines: a request body plus 'tenant' per line; - for stdin"),
    ],
    factory: FactoryOpt = "quotaflow.wiring:build_app",
    batch: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
) -> None:
    """Publish request events from a file or stdin, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from events import InferenceRequested
    from quotaflow.publish import parse

    settings = Settings()
    lines = file.readlines()

    async def go() -> tuple[int, list[tuple[int, str]]]:
        app = load_factory(factory)(settings)
        topic = app.topic(app.topology.requests)
        errors: list[tuple[int, str]] = []
        sent = 0
        pending: list[InferenceRequested] = []
        columns = (TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns) as progress:
                task = progress.add_task("publish", total=len(lines))
                for number, item in parse(lines):
                    if isinstance(item, str):
                        errors.append((number, item))
                    else:
                        pending.append(item)
                    if len(pending) >= batch:
                        await topic.send_many(pending)
                        sent += len(pending)
                        progress.update(task, completed=number)
                        pending = []
                if pending:
                    await topic.send_many(pending)
                    sent += len(pending)
                progress.update(task, completed=len(lines))
        finally:
            await app.close()
        return sent, errors

    sent, errors = asyncio.run(go())
    for number, message in errors[:20]:
        typer.echo(f"line {number}: {message}", err=True)
    if len(errors) > 20:
        typer.echo(f"… and {len(errors) - 20} more invalid lines", err=True)
    typer.echo(f"published {sent} request(s); {len(errors)} invalid line(s) skipped")
    if errors:
        raise typer.Exit(1)


@streams_cli.command("status")
def streams_status(factory: FactoryOpt = "quotaflow.wiring:build_app") -> None:
    """Each partition's length, each agent's position and lag."""
    from rich.console import Console
    from rich.table import Table

    from quotaflow.status import status
    from streams.log import StreamNotFound

    settings = Settings()

    async def go() -> None:
        app = load_factory(factory)(settings)
        try:
            streams, agents = await status(app)
        except StreamNotFound as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            await app.close()
        console = Console()
        table = Table(title="streams")
        table.add_column("stream")
        table.add_column("tail (next offset)", justify="right")
        for row in streams:
            table.add_row(row.stream, f"{row.tail:,}")
        console.print(table)
        table = Table(title="agents")
        for col in ("agent", "input stream", "position", "lag"):
            table.add_column(col, justify="right" if col in ("position", "lag") else "left")
        for a in agents:
            lag = "—" if a.lag is None else f"{a.lag:,}"
            style = "red" if a.lag and a.lag > 10_000 else ""
            pos = "—" if a.position is None else f"{a.position:,}"
            table.add_row(a.agent, a.stream, pos, f"[{style}]{lag}" if style else lag)
        console.print(table)

    asyncio.run(go())


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: QUOTAFLOW_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: QUOTAFLOW_HTTP_PORT (8080)")] = None,
    access_log: Annotated[bool, typer.Option(help="log each request (never its key)")] = False,
) -> None:
    """Serve the HTTP API with uvicorn (one process per replica) until SIGTERM/SIGINT."""
    import uvicorn

    from streams.ingress import IngressSettings, create_app

    logs.configure()
    settings = IngressSettings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.http_host,
        port=port or settings.http_port,
        access_log=access_log,
        log_config=None,
    )


@events_cli.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of every event type."""
    from events import event_json_schema

    typer.echo(json.dumps(event_json_schema(), indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
