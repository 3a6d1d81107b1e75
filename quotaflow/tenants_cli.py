"""``quotaflow tenants create|set-quota|list``: the admin API from the command line.

They call the running HTTP API (``--url``, default ``http://127.0.0.1:$QUOTAFLOW_HTTP_PORT``)
with the admin key (``QUOTAFLOW_ADMIN_KEY``), so every change is an event in the log exactly as
if it came from any other client. Exit codes: 0 done, 1 the API refused, 2 it cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from quotaflow.api_client import AdminApi, ApiFailure
from quotaflow.settings import Settings
from quotaflow.up import api_url

T = TypeVar("T")

tenants_cli = typer.Typer(
    help="Tenants and their quota policies (admin API).", no_args_is_help=True
)

UrlOpt = Annotated[
    str | None, typer.Option(help="the API's base URL (default: 127.0.0.1 and QUOTAFLOW_HTTP_PORT)")
]
Budget = Annotated[int, typer.Option(min=0, help="tokens per period")]
Period = Annotated[str, typer.Option(help="month or day")]
Optional = Annotated[int | None, typer.Option(min=1)]


def _call(url: str | None, action: Callable[[AdminApi], Awaitable[T]]) -> T:
    settings = Settings()

    async def go() -> T:
        base = url or api_url(settings)
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
            api = AdminApi(client, settings.admin_key.get_secret_value())
            return await action(api)

    try:
        return asyncio.run(go())
    except ApiFailure as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as exc:
        target = url or api_url(settings)
        typer.echo(f"error: cannot reach the API at {target} ({exc!r}); is it running?", err=True)
        raise typer.Exit(2) from None


def _policy(
    budget: int,
    period: str,
    tokens_per_minute: int | None,
    requests_per_minute: int | None,
    max_concurrent: int | None,
) -> dict[str, Any]:
    if period not in ("month", "day"):
        raise typer.BadParameter("period must be month or day", param_hint="--period")
    policy: dict[str, Any] = {"token_budget": budget, "period": period}
    for name, value in (
        ("tokens_per_minute", tokens_per_minute),
        ("requests_per_minute", requests_per_minute),
        ("max_concurrent", max_concurrent),
    ):
        if value is not None:
            policy[name] = value
    return policy


@tenants_cli.command("create")
def create(
    tenant_id: Annotated[str, typer.Argument(help="e.g. acme")],
    budget: Budget,
    name: Annotated[str | None, typer.Option(help="display name (default: the id)")] = None,
    period: Period = "month",
    tokens_per_minute: Optional = None,
    requests_per_minute: Optional = None,
    max_concurrent: Optional = None,
    url: UrlOpt = None,
) -> None:
    """Register a tenant and print its API key (shown once; only its hash is stored)."""
    policy = _policy(budget, period, tokens_per_minute, requests_per_minute, max_concurrent)
    created: dict[str, Any] = _call(
        url, lambda api: api.create_tenant(tenant_id, name or tenant_id, policy)
    )
    typer.echo(f"tenant {created['tenant_id']} created; policy {json.dumps(created['policy'])}")
    typer.echo(f"API key (shown once): {created['api_key']}")


@tenants_cli.command("set-quota")
def set_quota(
    tenant_id: Annotated[str, typer.Argument()],
    budget: Budget,
    period: Period = "month",
    tokens_per_minute: Optional = None,
    requests_per_minute: Optional = None,
    max_concurrent: Optional = None,
    url: UrlOpt = None,
) -> None:
    """Replace a tenant's quota policy (appends QuotaPolicySet)."""
    policy = _policy(budget, period, tokens_per_minute, requests_per_minute, max_concurrent)
    done: dict[str, Any] = _call(url, lambda api: api.set_policy(tenant_id, policy))
    typer.echo(f"tenant {done['tenant_id']}: policy {json.dumps(done['policy'])}")


@tenants_cli.command("list")
def list_(
    url: UrlOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one tenant each")] = False,
) -> None:
    """Every registered tenant and its policy."""
    tenants: list[dict[str, Any]] = _call(url, lambda api: api.tenants())
    if as_json:
        for t in sorted(tenants, key=lambda t: str(t["tenant_id"])):
            typer.echo(json.dumps(t))
        return
    table = Table(title=f"{len(tenants)} tenant(s)")
    for col in ("tenant", "name", "budget", "period", "tokens/min", "requests/min", "concurrent"):
        table.add_column(col, overflow="fold")
    for t in sorted(tenants, key=lambda t: str(t["tenant_id"])):
        p = t["policy"]
        table.add_row(
            t["tenant_id"],
            t["name"],
            f"{p['token_budget']:,}",
            p["period"],
            *(
                str(p.get(k) or "—")
                for k in ("tokens_per_minute", "requests_per_minute", "max_concurrent")
            ),
        )
    Console().print(table)
