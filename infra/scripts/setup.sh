#!/usr/bin/env bash
# Create .venv and install quotaflow with its development and Triton extras. Idempotent and
# quick when nothing changed. The first run builds llama-cpp-python from source (~5 min on
# 2 cores); the wheel is cached for later runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check uv
fi
UV=$(command -v uv || echo "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv")

if [[ ! -x .venv/bin/python ]]; then
  "$UV" venv -q -p "$PY" .venv
fi
stamp=.venv/.quotaflow-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "[setup] installing quotaflow[dev,triton] into .venv"
  "$UV" pip install -q -p .venv/bin/python -e '.[dev,triton]'
  touch "$stamp"
fi
