# syntax=docker/dockerfile:1
#
# Two images from one file:
#
#   docker build --target app    -t quotaflow:dev .         # ingress, agents, setup Job
#   docker build --target triton -t quotaflow-triton:dev .  # Triton serving triton_models/
#
# "app" installs quotaflow from wheels only (no compiler). "triton" adds the [triton] extra:
# nvidia-pytriton (its tritonserver binary), the SmolLM2 GGUF, and llama-cpp-python, which
# builds from source (~10 min on 2 cores), so it has its own build stage and the app image
# carries neither a compiler nor Triton.
#
# A GPU Triton image: build "triton" FROM a CUDA devel image that has Python 3.11
# (--build-arg PYTHON_IMAGE=...) with --build-arg LLAMA_CMAKE_ARGS=-DGGML_CUDA=on, and run it
# with --model-config-name=gpu (the chart's triton.modelConfigName). Without the CUDA build,
# llama.cpp computes on the CPU even where Triton places the instance on a GPU.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: quotaflow and its dependencies into /opt/venv ---------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# what the wheel holds (pyproject's packages and force-include), and nothing else
COPY pyproject.toml README.md ./
COPY events events
COPY streams streams
COPY projections projections
COPY quotaflow quotaflow
COPY infra/sql infra/sql
# EXTRA_PACKAGES: e.g. "opentelemetry-exporter-otlp-proto-grpc" for QUOTAFLOW_OTEL_EXPORTER=otlp
ARG EXTRA_PACKAGES=""
# hadolint ignore=DL3013
RUN pip install --only-binary=:all: . ${EXTRA_PACKAGES}

# ---- app: `quotaflow serve`, `quotaflow run AGENT...`, the setup Job -----------------------
FROM ${PYTHON_IMAGE} AS app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 quotaflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin quotaflow
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
# 8080: the ingress; 9100: an agent's /metrics, /healthz, /readyz
EXPOSE 8080 9100
ENTRYPOINT ["quotaflow"]
CMD ["--help"]

# ---- triton-build: the [triton] extra, llama-cpp-python compiled here ----------------------
FROM build AS triton-build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG LLAMA_CMAKE_ARGS=""
# hadolint ignore=DL3013
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip install ".[triton]"

# ---- triton: tritonserver (from nvidia-pytriton) serving /app/triton_models ------------------
FROM ${PYTHON_IMAGE} AS triton
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/opt/quotaflow-cache
RUN groupadd --system --gid 10001 quotaflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin quotaflow
COPY --from=triton-build /opt/venv /opt/venv
COPY triton_models /app/triton_models
# the Python backend stub for this interpreter, prepared once here (quotaflow.triton.server
# would otherwise copy it into $XDG_CACHE_HOME at every start)
RUN python -c "from quotaflow.triton.server import find_tritonserver as f, prepare_backend_dir as p; print(p(f()))"
USER 10001:10001
WORKDIR /app
# HTTP (health: /v2/health/ready), gRPC, metrics
EXPOSE 8000 8001 8002
ENTRYPOINT ["python", "-m", "quotaflow.triton.server"]
CMD ["--host=0.0.0.0", "--model-repository=/app/triton_models"]
