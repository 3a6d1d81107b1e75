"""What the routes use, opened once per process by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from projections.quota_view import QuotaView
from projections.request_results import RequestResults
from projections.tenant_directory import TenantDirectory
from quotaflow.tokens import smollm2_tokenizer
from quotaflow.wiring import event_log, topology
from streams.ingress.appender import Appender
from streams.ingress.auth import Authenticator
from streams.ingress.idempotency import IdempotencyStore
from streams.ingress.settings import IngressSettings
from streams.ingress.waiter import DecisionWaiter
from streams.log import EventLog
from streams.runtime.app import App, AppTopic
from streams.topics import Topology

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: IngressSettings
    log: EventLog
    topology: Topology
    requests: AppTopic
    catalog: AppTopic
    appender: Appender
    redis: Redis
    pool: AsyncConnectionPool[Any]
    waiter: DecisionWaiter
    directory: TenantDirectory
    results: RequestResults
    quota: QuotaView
    idempotency: IdempotencyStore
    auth: Authenticator

    @classmethod
    async def open(cls, settings: IngressSettings, log: EventLog | None = None) -> Services:
        """Connect everything; PostgreSQL is connected lazily (readiness reports it)."""
        smollm2_tokenizer()  # ~0.5 s once; the first request must not pay it
        topo = topology(settings)
        event_log_ = log if log is not None else event_log(settings, name="quotaflow-ingress")
        app = App("quotaflow-ingress", event_log_, topology=topo)
        await app.create_streams()
        redis = Redis.from_url(settings.redis_url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.postgres_dsn, min_size=1, max_size=4, open=False, timeout=2.0
        )
        await pool.open(wait=False)
        waiter = DecisionWaiter(event_log_, topo.quota.streams, cache_size=settings.decision_cache)
        waiter.start()
        directory = TenantDirectory(redis, settings.redis_prefix)
        return cls(
            settings=settings,
            log=event_log_,
            topology=topo,
            requests=app.topic(topo.requests),
            catalog=app.topic(topo.catalog),
            appender=Appender(event_log_),
            redis=redis,
            pool=pool,
            waiter=waiter,
            directory=directory,
            results=RequestResults(redis, settings.redis_prefix),
            quota=QuotaView(redis, settings.redis_prefix),
            idempotency=IdempotencyStore(redis, settings.redis_prefix, settings.idempotency_ttl_s),
            auth=Authenticator(
                directory, settings.admin_key, settings.auth_cache_s, settings.partitions
            ),
        )

    async def close(self) -> None:
        await self.appender.close()
        await self.waiter.close()
        await self.pool.close()
        await self.redis.aclose()
        await self.log.close()

    async def check(self, timeout: float = 1.0) -> dict[str, str]:
        """Each backing service: ``ok`` or what is wrong."""

        async def rabbitmq() -> None:
            if not self.waiter.running:
                raise RuntimeError("the decision waiter is not running")
            stream_exists = getattr(self.log, "stream_exists", None)
            if stream_exists is not None and not await stream_exists(
                self.topology.requests.stream(0)
            ):
                raise RuntimeError("the requests streams do not exist")

        async def redis() -> None:
            await self.redis.ping()

        async def tenant_directory() -> None:
            if not await self.directory.complete(self.settings.partitions):
                raise RuntimeError("the tenant directory has not caught up with every partition")

        async def postgres() -> None:
            async with self.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")

        checks = {
            "rabbitmq": rabbitmq,
            "redis": redis,
            "postgresql": postgres,
            "tenant_directory": tenant_directory,
        }
        results = await asyncio.gather(
            *(asyncio.wait_for(fn(), timeout) for fn in checks.values()), return_exceptions=True
        )
        out = {}
        for name, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                out[name] = f"unavailable: {type(result).__name__}"
                log.warning("readiness: %s unavailable: %r", name, result)
            else:
                out[name] = "ok"
        return out
