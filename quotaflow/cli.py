"""The ``quotaflow`` command."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated

import typer

from quotaflow import logs
from quotaflow.settings import Settings
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
    logs.configure()
    settings = Settings()
    asyncio.run(_run(settings, factory, agents, owner))


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


@events_cli.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of every event type."""
    from events import event_json_schema

    typer.echo(json.dumps(event_json_schema(), indent=2))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
