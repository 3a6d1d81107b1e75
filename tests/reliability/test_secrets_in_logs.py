"""No key ever reaches a log line: neither the admin key nor a tenant's, nor a wrong key
that starts with one, through a whole flow (tests/reliability/flow.py) at DEBUG.

tests/ingress/test_auth.py checks a few calls with pytest's capture. Here every logger of the
process (the API, the agents, rstream, psycopg, ...) is turned to DEBUG and rendered twice:
the plain format ``quotaflow serve`` uses (no redaction at all) and quotaflow's structlog JSON
without the admin key as a secret to cut out, so a key would show however it got there.
Then the same flow against ``quotaflow serve --access-log`` and ``quotaflow run`` in
processes of their own at DEBUG, reading what they wrote.
"""

from __future__ import annotations

import io
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import structlog
from psycopg import AsyncConnection, sql
from redis.asyncio import Redis

from quotaflow.logs import configure as configure_plain
from quotaflow.observability.logconfig import configure_logging
from quotaflow.settings import Settings
from streams.rabbit_log import RabbitEventLog
from streams.topics import Topology
from tests.conftest import RUN_ID
from tests.ingress.harness import ADMIN_KEY, Deployment
from tests.reliability.flow import full_flow
from tests.reliability.processes import free_port, spawn, stop, wait_ready

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="module")]


@contextmanager
def every_log_line() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, rendered as ``quotaflow serve`` configures it
    (:func:`quotaflow.logs.configure`) and as quotaflow's JSON lines."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    levels = [(lg, lg.level) for lg in loggers]
    buffer = io.StringIO()
    configure_logging(level="DEBUG", fmt="json", stream=buffer)  # no secrets to redact
    json_lines = root.handlers[:]
    for handler in json_lines:
        root.removeHandler(handler)
    configure_plain("DEBUG")  # basicConfig: one plain handler on stderr
    (plain,) = root.handlers
    assert isinstance(plain, logging.StreamHandler)
    plain.setStream(buffer)
    for handler in json_lines:
        root.addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.NOTSET)  # every record reaches the root's DEBUG
    try:
        yield buffer
    finally:
        for lg, old in levels:
            lg.setLevel(old)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def assert_no_keys(text: str, keys: list[str]) -> None:
    for key in keys:
        assert key not in text, (
            f"a key is in the logs: …{text[max(text.find(key) - 300, 0) :][:600]}"
        )


async def test_no_key_in_any_log_line_in_process(
    env: Deployment, capfd: pytest.CaptureFixture[str]
) -> None:
    with every_log_line() as buffer:
        await env.stop_agents()  # their start and stop are logged too
        env.start_agents()
        keys = await full_flow(env.client, ADMIN_KEY)
        await env.stop_agents()
        env.start_agents()
    text = buffer.getvalue() + "".join(capfd.readouterr())
    assert "took partition" in text  # the capture works: the runner's lines are in it
    assert '"level": "debug"' in text
    assert_no_keys(text, [ADMIN_KEY, *keys])


@pytest_asyncio.fixture(loop_scope="module")
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, str, Path]]:
    """``quotaflow serve --access-log`` and ``quotaflow run`` (all but inference) at DEBUG,
    on streams, a Redis prefix and a billing schema of their own; (url, admin key, logs)."""
    unique = f"t{RUN_ID}-l{uuid.uuid4().hex[:8]}"
    settings = Settings()
    admin_key = "adm-" + secrets.token_urlsafe(24)
    port = free_port()
    env = {
        "QUOTAFLOW_STREAM_PREFIX": f"{unique}-",
        "QUOTAFLOW_PARTITIONS": "2",
        "QUOTAFLOW_REDIS_PREFIX": f"{unique}:",
        "QUOTAFLOW_BILLING_SCHEMA": f"billing_{unique.replace('-', '_')}",
        "QUOTAFLOW_ADMIN_KEY": admin_key,
        "QUOTAFLOW_LOG_LEVEL": "DEBUG",
        "QUOTAFLOW_METRICS_PORT": "0",
        "QUOTAFLOW_HTTP_PORT": str(port),
    }
    agents = [
        "quota",
        "quota-view",
        "billing",
        "billing-catalog",
        "tenant-directory",
        "request-results",
    ]
    procs = [
        spawn(["run", *agents, "--ownership", "static"], env, tmp_path / "agents.log"),
        spawn(["serve", "--host", "127.0.0.1", "--access-log"], env, tmp_path / "serve.log"),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, procs)
        yield url, admin_key, tmp_path
    finally:
        for proc in reversed(procs):
            stop(proc)
        topo = Topology(partitions=2, prefix=env["QUOTAFLOW_STREAM_PREFIX"])
        log = RabbitEventLog(settings.stream_endpoint, name="quotaflow-test")
        for topic in topo.all:
            for stream in topic.streams:
                await log.delete_stream(stream)
        await log.close()
        redis = Redis.from_url(settings.redis_url)
        async for key in redis.scan_iter(match=f"{unique}:*"):
            await redis.unlink(key)
        await redis.aclose()
        async with await AsyncConnection.connect(settings.postgres_dsn, autocommit=True) as conn:
            schema = sql.Identifier(env["QUOTAFLOW_BILLING_SCHEMA"])
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))


@pytest.mark.slow
async def test_no_key_in_the_logs_of_served_processes(served: tuple[str, str, Path]) -> None:
    url, admin_key, logs = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        keys = await full_flow(client, admin_key)
        metrics = (await client.get("/metrics")).text
    assert "quotaflow_http_requests_total" in metrics
    assert "logged-" not in metrics  # the API process's metrics hold no tenant
    server = (logs / "serve.log").read_text()
    agents = (logs / "agents.log").read_text()
    assert '"POST /v1/requests HTTP/1.1" 202' in server  # the access log is on
    assert '"GET /v1/admin/tenants HTTP/1.1" 401' in server
    assert "took partition" in agents
    assert_no_keys(server + agents, [admin_key, *keys])
