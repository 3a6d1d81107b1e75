"""Run the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships, on this repository.

    python -m quotaflow.triton.server [--http-port 8000 --grpc-port 8001 --metrics-port 8002
                                       --model-repository triton_models]

Only the binary is used (never PyTriton's Python API). What it needs, measured on CPU-only Linux:

* the Python backend's stub for THIS interpreter's version: the wheel keeps one per version in
  ``python_backend_stubs/X.Y/``. The installed package is left untouched: the backend files are
  copied once into ``~/.cache/quotaflow/triton/<key>/backends/python/`` (``--cache-dir``);
* ``LD_LIBRARY_PATH`` starting with this interpreter's ``LIBDIR``, so the stub embeds the same
  ``libpython`` as the running Python (not Debian's under pyenv's stdlib), then the wheel's
  ``nvidia_pytriton.libs`` (the copied backend no longer finds them through its RPATH);
* this environment's ``bin`` first on ``PATH``: the stub's embedded Python then takes its
  ``sys.prefix`` from the venv, so ``model.py`` can import ``quotaflow`` and its dependencies;
* every endpoint bound to 127.0.0.1 unless ``--host`` says otherwise.

The process runs in its own session; :meth:`TritonHandle.stop` sends SIGTERM (tritonserver
then unloads its models and stops their stubs) and SIGKILLs that session if it lingers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from quotaflow.procs import die_with_parent

PYTRITON_DIST = "nvidia-pytriton"
BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready in time."""


@dataclass(frozen=True, slots=True)
class TritonDist:
    """The parts of the installed nvidia-pytriton wheel that tritonserver needs."""

    binary: Path
    backends: Path  # holds python/libtriton_python.so and python/triton_python_backend_utils.py
    stubs: Path  # holds X.Y/triton_python_backend_stub
    libs: Path  # nvidia_pytriton.libs: the wheel's bundled shared libraries
    version: str

    def stub(self, python: tuple[int, int]) -> Path:
        path = self.stubs / f"{python[0]}.{python[1]}" / STUB
        if not path.is_file():
            raise FileNotFoundError(f"{PYTRITON_DIST} has no Python backend stub for {path}")
        return path


def find_tritonserver() -> TritonDist:
    """Locate tritonserver inside the installed ``nvidia-pytriton`` (without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{PYTRITON_DIST} is not installed: `uv pip install -e '.[triton]'`"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    server = root / "tritonserver"
    dist = TritonDist(
        binary=server / "bin" / "tritonserver",
        backends=server / "backends",
        stubs=server / "python_backend_stubs",
        libs=root.parent / "nvidia_pytriton.libs",
        version=importlib.metadata.version(PYTRITON_DIST),
    )
    if not os.access(dist.binary, os.X_OK):
        raise FileNotFoundError(f"{dist.binary} is missing or not executable")
    return dist


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quotaflow" / "triton"


def prepare_backend_dir(
    dist: TritonDist, cache_dir: Path | None = None, python: tuple[int, int] | None = None
) -> Path:
    """A ``--backend-directory`` whose ``python/`` holds the stub for ``python`` (default: this
    interpreter). Built once, atomically (a temp dir renamed into place), then reused."""
    py = python or (sys.version_info.major, sys.version_info.minor)
    root = (cache_dir or default_cache_dir()) / f"pytriton-{dist.version}-py{py[0]}.{py[1]}"
    target = root / "backends"
    sources = {name: dist.backends / "python" / name for name in BACKEND_FILES}
    sources[STUB] = dist.stub(py)
    if _complete(target / "python", sources):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="backends-", dir=root))
    try:
        (tmp / "python").mkdir()
        for name, src in sources.items():
            shutil.copy2(src, tmp / "python" / name)
        if target.exists():  # an incomplete copy from an interrupted run
            shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process may have won the race
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _complete(target / "python", sources):
        raise RuntimeError(f"could not prepare the Triton backend directory {target}")
    return target


def _complete(folder: Path, sources: dict[str, Path]) -> bool:
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == src.stat().st_size
        for name, src in sources.items()
    )


def triton_env(dist: TritonDist, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tritonserver (and so the Python stub) must run with."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    lib_path = [str(libdir)] if libdir else []
    lib_path.append(str(dist.libs))
    if env.get("LD_LIBRARY_PATH"):
        lib_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", os.defpath)])
    env.pop("PYTHONHOME", None)
    return env


@dataclass(frozen=True, slots=True)
class TritonOptions:
    model_repository: Path = Path("triton_models")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_config_name: str | None = None  # e.g. "gpu": use <model>/configs/gpu.pbtxt
    log_verbose: int = 0
    exit_timeout_s: int = 10
    extra_args: tuple[str, ...] = ()


def triton_command(dist: TritonDist, backend_dir: Path, opts: TritonOptions) -> list[str]:
    cmd = [
        str(dist.binary),
        f"--model-repository={opts.model_repository.resolve()}",
        f"--backend-directory={backend_dir}",
        f"--http-address={opts.host}",
        f"--http-port={opts.http_port}",
        f"--grpc-address={opts.host}",
        f"--grpc-port={opts.grpc_port}",
        f"--metrics-address={opts.host}",
        f"--metrics-port={opts.metrics_port}",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={opts.exit_timeout_s}",
        f"--log-verbose={opts.log_verbose}",
    ]
    if opts.model_config_name:
        cmd.append(f"--model-config-name={opts.model_config_name}")
    cmd.extend(opts.extra_args)
    return cmd


@dataclass
class TritonHandle:
    """A running tritonserver. ``stop()`` is idempotent."""

    process: subprocess.Popen[bytes]
    options: TritonOptions
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    def is_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float, cancel: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if cancel is not None and cancel.is_set():
                raise TritonStartError("start cancelled")
            if self.process.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with {self.process.returncode}{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TritonStartError(f"tritonserver not ready in {timeout_s}s{self._log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then SIGKILL the process's session after ``timeout_s``; its exit code."""
        wait_s = self.options.exit_timeout_s + 5 if timeout_s is None else timeout_s
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    async def astop(self, timeout_s: float | None = None) -> int:
        return await asyncio.to_thread(self.stop, timeout_s)

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)

    def __enter__(self) -> TritonHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_triton(
    options: TritonOptions | None = None,
    *,
    log_path: Path | None = None,
    ready_timeout_s: float = 120.0,
    cache_dir: Path | None = None,
    cancel: threading.Event | None = None,
) -> TritonHandle:
    """Start tritonserver and wait until it (and every model) is ready.

    Output goes to ``log_path`` when given, else to this process's stdout/stderr. Setting
    ``cancel`` while it starts stops it and raises :class:`TritonStartError`.
    """
    opts = options or TritonOptions()
    if not opts.model_repository.is_dir():
        raise FileNotFoundError(f"model repository {opts.model_repository} does not exist")
    dist = find_tritonserver()
    cmd = triton_command(dist, prepare_backend_dir(dist, cache_dir), opts)
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # noqa: SIM115 - closed by TritonHandle.stop
    process = subprocess.Popen(
        cmd,
        env=triton_env(dist),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
        # the parent-death signal follows the spawning *thread*: only from the main one
        preexec_fn=die_with_parent
        if threading.current_thread() is threading.main_thread()
        else None,
    )
    handle = TritonHandle(process=process, options=opts, log_path=log_path, _log=log)
    try:
        handle.wait_ready(ready_timeout_s, cancel)
    except BaseException:
        handle.stop()
        raise
    return handle


async def astart_triton(
    options: TritonOptions | None = None,
    *,
    log_path: Path | None = None,
    ready_timeout_s: float = 120.0,
    cache_dir: Path | None = None,
) -> TritonHandle:
    """:func:`start_triton` without blocking the event loop."""
    return await asyncio.to_thread(
        start_triton,
        options,
        log_path=log_path,
        ready_timeout_s=ready_timeout_s,
        cache_dir=cache_dir,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests that must not clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def parse_args(argv: Sequence[str] | None = None) -> tuple[TritonOptions, float]:
    p = argparse.ArgumentParser(prog="python -m quotaflow.triton.server", description=__doc__)
    p.add_argument("--model-repository", type=Path, default=Path("triton_models"))
    p.add_argument("--host", default="127.0.0.1", help="address of every endpoint")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-config-name", help="e.g. gpu: use <model>/configs/gpu.pbtxt")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")
    a = p.parse_args(argv)
    opts = TritonOptions(
        model_repository=a.model_repository,
        host=a.host,
        http_port=a.http_port,
        grpc_port=a.grpc_port,
        metrics_port=a.metrics_port,
        model_config_name=a.model_config_name,
        log_verbose=a.log_verbose,
    )
    return opts, a.ready_timeout


def main(argv: Sequence[str] | None = None) -> int:
    opts, ready_timeout = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        handle = start_triton(opts, ready_timeout_s=ready_timeout, cancel=stop)
    except (TritonStartError, FileNotFoundError) as e:
        print(f"triton: {e}", file=sys.stderr)
        return 0 if stop.is_set() else 1
    print(
        f"triton: ready, gRPC {handle.grpc_url}, HTTP {handle.http_url}, "
        f"metrics {handle.metrics_url} (Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    while not stop.is_set() and handle.process.poll() is None:
        stop.wait(0.5)
    code = handle.stop()
    print(f"triton: stopped (exit code {code})", file=sys.stderr)
    return 0 if stop.is_set() else (code or 1)


if __name__ == "__main__":
    sys.exit(main())
