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
from quotaflow.local import local_system
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
    # names, port and admin key of its own (quotaflow.local); `quotaflow up` itself is run
    base = Settings().model_copy(update={"triton_url": triton_server.grpc_url})
    logs = tmp_path_factory.mktemp("up")
    system = local_system(
        f"t{RUN_ID}-up{secrets.token_hex(3)}", base=base, partitions=2, log_dir=logs
    )
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
        env={**os.environ, **system.env},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    up = Up(proc, system.url, system.admin_key, system.env, logs)
    try:
        if not asyncio.run(await_http_ok(f"{system.url}/readyz", 240)):
            pytest.fail(f"quotaflow up did not become ready; see {logs}")
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(10)
        out.close()
        asyncio.run(system.clean())
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
