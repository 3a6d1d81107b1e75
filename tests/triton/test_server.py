"""quotaflow.triton.server: finding, preparing and running the wheel's tritonserver."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from quotaflow.triton.server import (
    STUB,
    TritonDist,
    TritonOptions,
    TritonStartError,
    find_tritonserver,
    free_port,
    parse_args,
    prepare_backend_dir,
    start_triton,
    triton_command,
    triton_env,
)
from tests.triton.conftest import MODEL_REPOSITORY, needs_pytriton


@pytest.fixture(scope="module")
def dist() -> TritonDist:
    needs_pytriton()
    return find_tritonserver()


def test_the_binary_is_found(dist: TritonDist) -> None:
    assert dist.binary.name == "tritonserver"
    assert os.access(dist.binary, os.X_OK)
    assert dist.stub((sys.version_info.major, sys.version_info.minor)).is_file()
    with pytest.raises(FileNotFoundError, match="no Python backend stub"):
        dist.stub((2, 7))


def test_backend_dir_is_prepared_once_outside_the_package(dist: TritonDist, tmp_path: Path) -> None:
    backends = prepare_backend_dir(dist, cache_dir=tmp_path)
    assert backends.is_relative_to(tmp_path)
    stub = backends / "python" / STUB
    assert stub.read_bytes() == dist.stub(sys.version_info[:2]).read_bytes()
    assert os.access(stub, os.X_OK)
    assert (backends / "python" / "libtriton_python.so").is_file()
    mtime = stub.stat().st_mtime_ns
    assert prepare_backend_dir(dist, cache_dir=tmp_path) == backends
    assert stub.stat().st_mtime_ns == mtime  # reused, not copied again
    other = prepare_backend_dir(dist, cache_dir=tmp_path, python=(3, 12))
    assert other != backends
    assert (other / "python" / STUB).read_bytes() == dist.stub((3, 12)).read_bytes()


def test_an_incomplete_backend_dir_is_rebuilt(dist: TritonDist, tmp_path: Path) -> None:
    backends = prepare_backend_dir(dist, cache_dir=tmp_path)
    (backends / "python" / STUB).write_bytes(b"truncated")
    assert prepare_backend_dir(dist, cache_dir=tmp_path) == backends
    assert (backends / "python" / STUB).stat().st_size > 1000


def test_environment(dist: TritonDist) -> None:
    env = triton_env(dist, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x", "PYTHONHOME": "/p"})
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs == [sysconfig.get_config_var("LIBDIR"), str(dist.libs), "/x"]
    assert env["PATH"].split(os.pathsep) == [sysconfig.get_path("scripts"), "/usr/bin"]
    assert "PYTHONHOME" not in env


def test_command_binds_every_endpoint_to_loopback(dist: TritonDist) -> None:
    opts = TritonOptions(http_port=1, grpc_port=2, metrics_port=3, model_config_name="gpu")
    cmd = triton_command(dist, Path("/b"), opts)
    assert cmd[0] == str(dist.binary)
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in cmd
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3"} <= set(cmd)
    assert "--backend-directory=/b" in cmd
    assert "--model-config-name=gpu" in cmd
    assert not any(
        a.startswith("--model-config-name")
        for a in triton_command(dist, Path("/b"), TritonOptions())
    )


def test_cli_arguments() -> None:
    opts, ready = parse_args(
        ["--grpc-port", "9001", "--model-repository", "m", "--ready-timeout", "5"]
    )
    assert opts.grpc_port == 9001
    assert opts.http_port == 8000
    assert opts.model_repository == Path("m")
    assert ready == 5.0


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_missing_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model repository"):
        start_triton(TritonOptions(model_repository=tmp_path / "nope"))


@pytest.mark.triton
def test_a_broken_model_fails_the_start_with_its_log(dist: TritonDist, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\n')
    (repo / "broken" / "1" / "model.py").write_text("raise RuntimeError('boom at import')\n")
    opts = TritonOptions(
        model_repository=repo,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
    )
    with pytest.raises(TritonStartError, match="boom at import"):
        start_triton(opts, log_path=tmp_path / "log", ready_timeout_s=60)


@pytest.mark.triton
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_cli_serves_until_signalled(dist: TritonDist, tmp_path: Path, sig: int) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY / "echo", repo / "echo")
    ports = [str(free_port()) for _ in range(3)]
    args = ["--model-repository", str(repo), "--http-port", ports[0], "--grpc-port", ports[1]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "quotaflow.triton.server", *args, "--metrics-port", ports[2]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # the stub must import quotaflow through the venv, not the working dir
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("triton: ready"):
                break
        assert f"gRPC 127.0.0.1:{ports[1]}" in lines[-1], "".join(lines[-20:])
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/health/ready") as resp:
            assert resp.status == 200
        proc.send_signal(sig)
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, rest
        assert "triton: stopped (exit code 0)" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
