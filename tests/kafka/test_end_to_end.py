"""The whole system on Kafka: the HTTP API and every agent with ``QUOTAFLOW_LOG=kafka`` on
the session's tansu broker, Redis and PostgreSQL, and Triton's echo model.

request (POST /v1/requests) → TokensReserved (quota agent) → InferenceCompleted (inference
agent, Triton) → ReservationSettled (quota agent) → a settled, priced request in the billing
view in PostgreSQL (billing agent), each event once in its Kafka topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from events import InferenceCompleted, ReservationSettled, TokensReserved
from projections.billing import migrate
from projections.billing.queries import charge
from quotaflow.settings import Settings
from quotaflow.tansu import TansuBroker
from quotaflow.triton.server import TritonHandle
from quotaflow.wiring import build_app
from streams.ingress import IngressSettings, create_app
from streams.kafka_log import KafkaEventLog
from streams.runtime.ownership import StaticOwnership
from streams.runtime.runner import AgentRunner
from streams.topics import Topology
from tests.runtime.helpers import read_all

pytestmark = [pytest.mark.services, pytest.mark.triton, pytest.mark.slow]

ADMIN_KEY = "kafka-admin-" + uuid.uuid4().hex
AGENTS = [
    "quota",
    "quota-view",
    "inference",
    "billing",
    "billing-catalog",
    "tenant-directory",
    "request-results",
]


@pytest.fixture
async def kafka_settings(
    unique: str, settings: Settings, tansu: TansuBroker, triton_server: TritonHandle
) -> AsyncIterator[IngressSettings]:
    values: dict[str, Any] = {
        **settings.model_dump(),
        "log": "kafka",
        "kafka_bootstrap_servers": tansu.bootstrap_servers,
        "stream_prefix": f"{unique}-",
        "partitions": 2,
        "redis_prefix": f"{unique}:",
        "billing_schema": f"billing_{unique.replace('-', '_')}",
        "triton_url": triton_server.grpc_url,
        "admin_key": ADMIN_KEY,
        "decision_timeout_s": 10.0,
    }
    config = IngressSettings.model_validate(values)
    async with await AsyncConnection.connect(config.postgres_dsn, autocommit=True) as conn:
        await migrate(conn, config.billing_schema)
    yield config
    log = KafkaEventLog(tansu.bootstrap_servers, name="quotaflow-test-clean")
    topo = Topology(partitions=config.partitions, prefix=config.stream_prefix)
    for topic in topo.all:
        for stream in topic.streams:
            await log.delete_stream(stream)
    await log.close()
    redis = Redis.from_url(config.redis_url)
    async for key in redis.scan_iter(match=f"{config.redis_prefix}*", count=1000):
        await redis.unlink(key)
    await redis.aclose()
    async with await AsyncConnection.connect(config.postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(config.billing_schema)
            )
        )


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        await asyncio.sleep(0.1)


async def test_a_request_is_reserved_served_settled_and_billed_on_kafka(
    kafka_settings: IngressSettings,
) -> None:
    config = kafka_settings
    agents = build_app(config)
    assert isinstance(agents.log, KafkaEventLog)
    await agents.create_streams()
    stop = asyncio.Event()
    runner = asyncio.create_task(
        AgentRunner(agents, AGENTS, StaticOwnership(), interval=0.05).run(stop)
    )
    api = create_app(config)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with (
            api.router.lifespan_context(api),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=api), base_url="http://ingress"
            ) as client,
        ):
            tenant = {
                "tenant_id": "kafka-co",
                "name": "Kafka Co",
                "policy": {"token_budget": 10_000},
            }
            r = await client.post("/v1/admin/tenants", json=tenant, headers=admin)
            assert r.status_code == 201, r.text
            key = {"Authorization": f"Bearer {r.json()['api_key']}"}
            price = {"prompt_per_1k": "0.5", "completion_per_1k": "1.5"}
            r = await client.put("/v1/admin/prices/echo", json=price, headers=admin)
            assert r.status_code == 202, r.text

            request = {"model": "echo", "prompt": "kafka all the way down", "max_tokens": 16}
            r = await client.post("/v1/requests", json=request, headers=key)
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "reserved"
            request_id = r.json()["request_id"]

            async def settled() -> dict[str, Any] | None:
                got = await client.get(f"/v1/requests/{request_id}", headers=key)
                if got.status_code == 200 and got.json()["status"] == "settled":
                    return dict(got.json())
                return None

            view = await until(settled, 60, "settled request")
            tokens = view["charged_tokens"]
            assert tokens == view["actual_tokens"]
            assert tokens["completion"] > 0
            assert view["text"]  # the echo model's answer, kept by the request-results agent

            # the billing view in PostgreSQL priced it
            today = datetime.now(UTC).date()
            usage = await client.get(
                "/v1/tenants/kafka-co/usage",
                params={"from": str(today), "to": str(today + timedelta(days=1))},
                headers=key,
            )
            assert usage.status_code == 200, usage.text
            assert usage.json()["requests"] == 1
            assert usage.json()["total_tokens"] == tokens["total"]
            invoice = await client.get(f"/v1/tenants/kafka-co/invoices/{today:%Y-%m}", headers=key)
            assert invoice.status_code == 200, invoice.text
            expected = charge(tokens["prompt"], Decimal("0.5")) + charge(
                tokens["completion"], Decimal("1.5")
            )
            assert Decimal(str(invoice.json()["total"])) == expected, invoice.json()
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)
        topo = agents.topology
        decisions = await read_all(agents.log, topo.quota.streams)
        results = await read_all(agents.log, topo.requests.streams)
        await agents.close()

    # every step happened once, in the Kafka topics
    mine = [e for e in [*decisions, *results] if str(getattr(e, "request_id", "")) == request_id]
    kinds = Counter(type(e).__name__ for e in mine)
    assert kinds == {
        "InferenceRequested": 1,
        "TokensReserved": 1,
        "InferenceCompleted": 1,
        "ReservationSettled": 1,
    }, kinds
    reserved = next(e for e in mine if isinstance(e, TokensReserved))
    completed = next(e for e in mine if isinstance(e, InferenceCompleted))
    settled_event = next(e for e in mine if isinstance(e, ReservationSettled))
    assert completed.causation_id == reserved.event_id
    assert settled_event.causation_id == completed.event_id
