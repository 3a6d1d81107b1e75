"""The RabbitMQ backend across a broker restart (the RabbitMQ application is stopped and
started: every connection drops, streams recover from disk)."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from streams.log import Position
from streams.rabbit_log import RabbitEventLog
from tests.streams.contract import collect, take

pytestmark = [pytest.mark.services, pytest.mark.slow]


def restart_broker() -> None:
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)


async def test_a_consumer_resumes_from_its_stored_position_after_a_broker_restart(
    rabbit_log: RabbitEventLog, unique: str
) -> None:
    await rabbit_log.create_stream(unique)
    try:
        await rabbit_log.append(unique, [f"before-{i}".encode() for i in range(100)])
        await rabbit_log.store("reader", unique, 49)
        for _ in range(50):
            if await rabbit_log.load("reader", unique) == 49:
                break
            await asyncio.sleep(0.05)

        # a live subscription rides through the restart without losing or repeating records
        live = rabbit_log.subscribe(unique, Position.first())
        records = live.__aiter__()
        seen = await take(records, 100)
        reader = asyncio.create_task(take(records, 10, timeout=120))

        await asyncio.to_thread(restart_broker)

        # the same log object reconnects: appends and offset queries work again
        await rabbit_log.append(unique, [f"after-{i}".encode() for i in range(10)])
        assert await rabbit_log.load("reader", unique) == 49
        resumed = await collect(rabbit_log, unique, Position.after(49))
        assert [r.data for r in resumed] == [
            *(f"before-{i}".encode() for i in range(50, 100)),
            *(f"after-{i}".encode() for i in range(10)),
        ]
        after = await reader
        await live.close()
        assert [r.data for r in seen] == [f"before-{i}".encode() for i in range(100)]
        assert [r.data for r in after] == [f"after-{i}".encode() for i in range(10)]
    finally:
        await rabbit_log.delete_stream(unique)
