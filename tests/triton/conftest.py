"""Fixtures of the Triton tests (the server itself comes from tests/triton_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import tritonclient.grpc.aio as grpcaio

from quotaflow.triton.server import TritonHandle
from tests.triton_server import MODEL_REPOSITORY, REPO_ROOT, needs_pytriton

__all__ = ["MODEL_REPOSITORY", "REPO_ROOT", "needs_pytriton"]


@pytest.fixture
async def triton(triton_server: TritonHandle) -> AsyncIterator[grpcaio.InferenceServerClient]:
    client = grpcaio.InferenceServerClient(triton_server.grpc_url)
    try:
        yield client
    finally:
        await client.close()
