"""quotaflow's own processes for tests: ``quotaflow serve`` and ``quotaflow run``, each
logging to a file, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx

from quotaflow.local import free_port
from tests.runtime.processes import spawn_cli as spawn

__all__ = ["free_port", "spawn", "stop", "wait_ready"]


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(10)


async def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            assert all(p.poll() is None for p in procs), "a process exited early"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} not ready in {timeout}s"
            await asyncio.sleep(0.25)
