"""One deployment per test module (streams, agents, API in process), as in tests/ingress."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from quotaflow.settings import Settings
from tests.conftest import RUN_ID
from tests.ingress.harness import Deployment, deployment


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[Deployment]:
    unique = f"t{RUN_ID}-r{uuid.uuid4().hex[:8]}"
    async with deployment(Settings(), unique) as d:
        yield d
