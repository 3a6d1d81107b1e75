"""Running quotaflow processes in tests, and killing them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m quotaflow.cli ARGS`` with ``env`` over this process's environment."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "quotaflow.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def spawn_agent(
    agent: str | list[str],
    env: dict[str, str],
    *,
    ownership: str = "static",
    log: Path,
    factory: str = "tests.runtime.crash_app:build",
) -> subprocess.Popen[bytes]:
    agents = [agent] if isinstance(agent, str) else agent
    return spawn_cli(["run", *agents, "--factory", factory, "--ownership", ownership], env, log)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)
