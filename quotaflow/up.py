"""``quotaflow up``: every component of quotaflow on this machine, one process each.

The processes are the ones a Kubernetes deployment runs as pods (see ``infra/helm``): the
ingress (``quotaflow serve``), one process per agent group (``quotaflow run …``) and, when
nothing answers on ``QUOTAFLOW_TRITON_URL``, a Triton server for ``triton_models/``. They share
the parent's ``QUOTAFLOW_*`` settings; the supervisor restarts any that dies.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from quotaflow.settings import Settings
from quotaflow.supervisor import Component

ROOT = Path(__file__).resolve().parents[1]

# process name → the agents it runs (the Helm chart runs the same groups as Deployments)
AGENT_PROCESSES: Mapping[str, tuple[str, ...]] = {
    "quota": ("quota",),
    "quota-view": ("quota-view",),
    "billing": ("billing", "billing-catalog"),
    "directory": ("tenant-directory", "request-results"),
    "inference": ("inference",),
}
TRITON = "triton"
INGRESS = "ingress"


def triton_reachable(url: str, timeout_s: float = 1.0) -> bool:
    """Something accepts TCP connections on Triton's gRPC ``host:port``."""
    host, _, port = url.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def triton_component(settings: Settings, model_repository: Path) -> Component:
    """tritonserver (from nvidia-pytriton) on the gRPC port of ``QUOTAFLOW_TRITON_URL``; its HTTP
    port is the one below and its metrics port the one above."""
    grpc_port = int(settings.triton_url.rpartition(":")[2])
    argv = [
        sys.executable,
        "-m",
        "quotaflow.triton.server",
        "--model-repository",
        str(model_repository),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(grpc_port - 1),
        "--metrics-port",
        str(grpc_port + 1),
        "--ready-timeout",
        "300",
    ]
    return Component(TRITON, argv)


def components(
    *,
    triton: Component | None,
    metrics_port_base: int = 9100,
    env: Mapping[str, str] | None = None,
) -> list[Component]:
    """The processes of a local quotaflow, Triton (if given) first.

    Agent process ``i`` serves its metrics on ``metrics_port_base + i`` (0 turns them off).
    """
    shared = dict(env or {})
    out = [triton] if triton is not None else []
    for i, (name, agents) in enumerate(AGENT_PROCESSES.items()):
        port = metrics_port_base + i if metrics_port_base else 0
        argv = [sys.executable, "-m", "quotaflow.cli", "run", *agents]
        out.append(Component(name, argv, {**shared, "QUOTAFLOW_METRICS_PORT": str(port)}))
    out.append(Component(INGRESS, [sys.executable, "-m", "quotaflow.cli", "serve"], shared))
    return out


def wait_http_ok(url: str, timeout_s: float) -> bool:
    """Poll ``url`` until it answers 200 or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


async def await_http_ok(url: str, timeout_s: float) -> bool:
    """``wait_http_ok`` for asyncio code."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    return False


def api_url(settings: Settings) -> str:
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.http_port}"
