"""The Dockerfile builds what pyproject.toml packages (a check of the file; no image is built)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    """Each ``FROM ... AS name`` stage's text."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def copied(stage: str) -> set[str]:
    """The build-context sources of a stage's COPY instructions."""
    out: set[str] = set()
    for line in stage.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            out.update(words[1:-1])
    return out


def ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_the_build_stage_copies_everything_the_wheel_holds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {*wheel["packages"], *wheel.get("force-include", {}), "pyproject.toml"}
    needed.add(project["project"]["readme"])
    assert copied(stages()["build"]) == needed
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not ignored(path), path


def test_the_images_and_their_entry_points() -> None:
    assert set(stages()) == {"build", "app", "triton-build", "triton"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "quotaflow" in project["project"]["scripts"]
    assert 'ENTRYPOINT ["quotaflow"]' in stages()["app"]
    triton = stages()["triton"]
    assert "COPY triton_models /app/triton_models" in triton
    assert not ignored("triton_models/echo/config.pbtxt")
    assert ignored("triton_models/echo/1/__pycache__")
    assert 'ENTRYPOINT ["python", "-m", "quotaflow.triton.server"]' in triton
    assert 'pip install ".[triton]"' in stages()["triton-build"]
    assert "USER 10001:10001" in stages()["app"]
    assert "USER 10001:10001" in triton
