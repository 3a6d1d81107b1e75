"""A quotaflow of its own on this machine: ``quotaflow up``'s processes under a unique stream
prefix, Redis prefix, billing schema, HTTP port and admin key, and the clean-up afterwards.

The demo (``just demo``) and the chaos harness (``just chaos``) run on one of these, so they
never touch a running system's data.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from quotaflow.settings import Settings
from quotaflow.supervisor import Notify, Supervisor
from quotaflow.up import (
    INGRESS,
    ROOT,
    TRITON,
    api_url,
    await_http_ok,
    components,
    triton_component,
    triton_reachable,
)
from quotaflow.wiring import topology
from streams.rabbit_log import RabbitEventLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_triplet() -> int:
    """A port ``p`` with ``p - 1``, ``p`` and ``p + 1`` free (Triton's HTTP, gRPC, metrics)."""
    for _ in range(100):
        p = free_port()
        ok = True
        for q in (p - 1, p + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no three free ports in a row")


@dataclass
class LocalSystem:
    """Settings and processes of one private deployment."""

    name: str
    settings: Settings
    admin_key: str
    log_dir: Path
    supervisor: Supervisor
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return api_url(self.settings)

    @property
    def runs_triton(self) -> bool:
        return TRITON in self.supervisor.names

    async def wait_ready(self, timeout_s: float = 300.0) -> bool:
        """The API is ready (RabbitMQ, Redis, PostgreSQL reachable) and Triton answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervisor.poll()
            if triton_reachable(self.settings.triton_url) and await await_http_ok(
                f"{self.url}/readyz", 1.0
            ):
                return True
            await asyncio.sleep(0.25)
        return False

    async def clean(self) -> None:
        """Delete the deployment's streams, Redis keys and billing schema."""
        await drop_data(self.settings)


def local_system(
    name: str,
    *,
    base: Settings | None = None,
    log_dir: Path | None = None,
    notify: Notify | None = None,
    partitions: int | None = None,
    extra_env: dict[str, str] | None = None,
    own_triton: bool = False,
) -> LocalSystem:
    """A private deployment called ``name`` (not started); Triton is included when nothing
    answers on the base settings' Triton URL, or on ports of its own with ``own_triton``."""
    base = base or Settings()
    if own_triton:
        base = base.model_copy(update={"triton_url": f"127.0.0.1:{free_port_triplet()}"})
    admin_key = "qf_admin_" + secrets.token_urlsafe(24)
    port = free_port()
    safe = name.replace("-", "_")
    update = {
        "stream_prefix": f"{name}-",
        "redis_prefix": f"{name}:",
        "billing_schema": safe,
        "http_host": "127.0.0.1",
        "http_port": port,
        "partitions": partitions or base.partitions,
    }
    settings = base.model_copy(update=update)
    env = {
        "QUOTAFLOW_STREAM_PREFIX": settings.stream_prefix,
        "QUOTAFLOW_REDIS_PREFIX": settings.redis_prefix,
        "QUOTAFLOW_BILLING_SCHEMA": settings.billing_schema,
        "QUOTAFLOW_HTTP_HOST": settings.http_host,
        "QUOTAFLOW_HTTP_PORT": str(port),
        "QUOTAFLOW_PARTITIONS": str(settings.partitions),
        "QUOTAFLOW_ADMIN_KEY": admin_key,
        "QUOTAFLOW_TRITON_URL": settings.triton_url,
        "QUOTAFLOW_LOG_LEVEL": os.environ.get("QUOTAFLOW_LOG_LEVEL", "WARNING"),
        **(extra_env or {}),
    }
    triton = None
    if own_triton or not triton_reachable(settings.triton_url):
        triton = triton_component(settings, ROOT / "triton_models")
    comps = components(triton=triton, metrics_port_base=0, env=env)
    logs = log_dir or ROOT / "var" / name
    sup = Supervisor(comps, log_dir=logs, cwd=ROOT, notify=notify or (lambda n, m: None))
    return LocalSystem(name, settings, admin_key, logs, sup, env)


async def drop_data(settings: Settings) -> None:
    """Remove everything a deployment with these settings stored."""
    log = RabbitEventLog(settings.stream_endpoint, name="quotaflow-clean")
    try:
        for topic in topology(settings).all:
            for stream in topic.streams:
                await log.delete_stream(stream)
    finally:
        await log.close()
    redis = Redis.from_url(settings.redis_url)
    try:
        batch = [k async for k in redis.scan_iter(match=settings.redis_prefix + "*", count=1000)]
        for i in range(0, len(batch), 1000):
            await redis.unlink(*batch[i : i + 1000])
    finally:
        await redis.aclose()
    async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(settings.billing_schema)
            )
        )


__all__ = ["INGRESS", "LocalSystem", "drop_data", "free_port", "local_system"]
