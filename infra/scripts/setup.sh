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
# llama-cpp-python ships no wheel on PyPI and takes 5-10 min to build on 2 cores. Keep the
# wheel we build in a wheelhouse outside the checkout, so every later install (a fresh clone,
# CI) reuses it instead of building again.
WHEELS=${QUOTAFLOW_WHEELHOUSE:-$HOME/.cache/quotaflow/wheels}
mkdir -p "$WHEELS"
llama=$(ls "$WHEELS"/llama_cpp_python-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $llama ]]; then
  built=$(find "$HOME/.cache/uv" -name 'llama_cpp_python-*.whl' 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n $built ]]; then
    cp "$built" "$WHEELS/"
  else
    echo "[setup] building llama-cpp-python once (5-10 min on 2 cores; cached in $WHEELS)"
    "$PY" -m pip wheel -q --no-deps --disable-pip-version-check -w "$WHEELS" 'llama-cpp-python>=0.3.2'
  fi
  llama=$(ls "$WHEELS"/llama_cpp_python-*.whl | sort -V | tail -n 1)
fi
llama_version=$(basename "$llama" | cut -d- -f2)

stamp=.venv/.quotaflow-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "[setup] installing quotaflow[dev,triton] into .venv"
  "$UV" pip install -q -p .venv/bin/python --find-links "$WHEELS" \
    -e '.[dev,triton]' "llama-cpp-python==$llama_version"
  touch "$stamp"
fi
