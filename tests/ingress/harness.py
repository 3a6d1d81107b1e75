"""One quotaflow deployment of its own for the ingress tests: streams under a unique prefix, a
unique Redis prefix and billing schema, the real agents, and the API in process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from psycopg import AsyncConnection

from events import Event
from projections.billing import migrate
from quotaflow.local import drop_data
from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.ingress import IngressSettings, create_app
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology

ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex
AGENTS = [
    "quota",
    "quota-view",
    "billing",
    "billing-catalog",
    "tenant-directory",
    "request-results",
]


def ingress_settings(base: Settings, unique: str, **overrides: Any) -> IngressSettings:
    values: dict[str, Any] = {
        **base.model_dump(),
        "stream_prefix": f"{unique}-",
        "partitions": 2,
        "redis_prefix": f"{unique}:",
        "billing_schema": f"billing_{unique.replace('-', '_')}",
        "admin_key": ADMIN_KEY,
        "decision_timeout_s": 10.0,
        **overrides,
    }
    return IngressSettings.model_validate(values)


@dataclass
class Deployment:
    settings: IngressSettings
    topology: Topology
    log: RabbitEventLog
    agents: App
    api: FastAPI
    client: httpx.AsyncClient
    _runner_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: asyncio.Task[None] | None = None

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def create_tenant(self, tenant_id: str, **policy: Any) -> dict[str, str]:
        """Register a tenant through the API; its key's headers."""
        body = {"tenant_id": tenant_id, "name": f"Tenant {tenant_id}", "policy": policy}
        r = await self.client.post("/v1/admin/tenants", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        assert r.json()["active"] is True
        return {"Authorization": f"Bearer {r.json()['api_key']}"}

    async def publish(self, *events: Event) -> None:
        for event in events:
            await self.agents.topic(self.topology.requests).send(event)

    def start_agents(self) -> None:
        self._runner_stop = asyncio.Event()
        runner = AgentRunner(self.agents, AGENTS, StaticOwnership(), interval=0.05)
        self._runner = asyncio.create_task(runner.run(self._runner_stop))

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Until /readyz says yes (the tenant directory has caught up with every partition)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (await self.client.get("/readyz")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, (
                await self.client.get("/readyz")
            ).text
            await asyncio.sleep(0.05)

    async def stop_agents(self) -> None:
        self._runner_stop.set()
        if self._runner is not None:
            await asyncio.wait_for(self._runner, 60)
            self._runner = None


@contextlib.asynccontextmanager
async def deployment(
    base: Settings, unique: str, *, agents: bool = True, **overrides: Any
) -> AsyncIterator[Deployment]:
    settings = ingress_settings(base, unique, **overrides)
    topo = Topology(partitions=settings.partitions, prefix=settings.stream_prefix)
    log = RabbitEventLog(settings.stream_endpoint, name="quotaflow-test", connect_timeout=90)
    agent_app = build_app(settings)
    await agent_app.create_streams()
    async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await migrate(conn, settings.billing_schema)
    api = create_app(settings)
    try:
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
                env = Deployment(settings, topo, log, agent_app, api, client)
                if agents:
                    env.start_agents()
                    await env.ready()
                try:
                    yield env
                finally:
                    await env.stop_agents()
    finally:
        await agent_app.close()
        await drop_data(settings)
        await log.close()
