"""The session's real tritonserver over ``triton_models/`` (registered in tests/conftest.py,
so every test package shares one server)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotaflow.triton.server import TritonHandle, TritonOptions, free_port, start_triton

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = REPO_ROOT / "triton_models"


def needs_pytriton() -> None:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton is not installed: uv pip install -e '.[dev,triton]'")


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    needs_pytriton()
    options = TritonOptions(
        model_repository=MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
    )
    log_path = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    handle = start_triton(options, log_path=log_path, ready_timeout_s=180)
    yield handle
    assert handle.stop() == 0, f"tritonserver did not stop cleanly; see {log_path}"
