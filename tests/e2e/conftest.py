"""``quotaflow up`` as a user runs it: real processes (the ingress, every agent group) against
the real RabbitMQ, Redis, PostgreSQL and the session's Triton, under names of their own."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from quotaflow.api_client import AdminApi, TenantApi
from quotaflow.local import drop_data, free_port
from quotaflow.settings import Settings
from quotaflow.triton.server import TritonHandle
from quotaflow.up import await_http_ok
from tests.conftest import RUN_ID

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Up:
    """A running ``quotaflow up`` and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    admin_key: str
    env: dict[str, str]
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``quotaflow ARGS…`` with this deployment's settings."""
        return subprocess.run(
            [sys.executable, "-m", "quotaflow.cli", *args],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="package")
def up_system(
    triton_server: TritonHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Up]:
    name = f"t{RUN_ID}-up{secrets.token_hex(3)}"
    port = free_port()
    env = {
        "QUOTAFLOW_STREAM_PREFIX": f"{name}-",
        "QUOTAFLOW_REDIS_PREFIX": f"{name}:",
        "QUOTAFLOW_BILLING_SCHEMA": name.replace("-", "_"),
        "QUOTAFLOW_HTTP_HOST": "127.0.0.1",
        "QUOTAFLOW_HTTP_PORT": str(port),
        "QUOTAFLOW_PARTITIONS": "2",
        "QUOTAFLOW_ADMIN_KEY": "qf_admin_" + secrets.token_urlsafe(16),
        "QUOTAFLOW_TRITON_URL": triton_server.grpc_url,
        "QUOTAFLOW_LOG_LEVEL": "WARNING",
    }
    logs = tmp_path_factory.mktemp("up")
    out = (logs / "up.out").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quotaflow.cli",
            "up",
            "--log-dir",
            str(logs),
            "--metrics-port-base",
            "0",
            "--ready-timeout",
            "240",
        ],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    system = Up(proc, url, env["QUOTAFLOW_ADMIN_KEY"], env, logs)
    try:
        if not asyncio.run(await_http_ok(f"{url}/readyz", 240)):
            pytest.fail(f"quotaflow up did not become ready; see {logs}")
        yield system
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(10)
        out.close()
        settings = Settings.model_validate(
            {
                **Settings().model_dump(),
                "stream_prefix": env["QUOTAFLOW_STREAM_PREFIX"],
                "redis_prefix": env["QUOTAFLOW_REDIS_PREFIX"],
                "billing_schema": env["QUOTAFLOW_BILLING_SCHEMA"],
                "partitions": 2,
            }
        )
        asyncio.run(drop_data(settings))
    assert code == 0, f"quotaflow up exited with {code}; see {logs}/up.out"


@pytest_asyncio.fixture
async def client(up_system: Up) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=up_system.url, timeout=30.0) as c:
        yield c


@pytest_asyncio.fixture
async def admin(up_system: Up, client: httpx.AsyncClient) -> AdminApi:
    return AdminApi(client, up_system.admin_key)


async def new_tenant(admin: AdminApi, name: str, **policy: int) -> TenantApi:
    created = await admin.create_tenant(name, name.title(), dict(policy))
    assert created["active"] is True
    return TenantApi(admin.client, name, created["api_key"])
