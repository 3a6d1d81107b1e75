# quotaflow — run `just` to list the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]
set dotenv-load := false

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# list the recipes
default:
    @just --list --unsorted

# --- the system ---------------------------------------------------------------------

# everything end to end on this machine: services, streams, sample traffic, views
demo: setup services
    python -m quotaflow.demo

# start RabbitMQ (+ stream plugin), Redis and PostgreSQL if needed; create the database
services:
    bash infra/scripts/services.sh

# serve triton_models/ with the tritonserver shipped by nvidia-pytriton (Ctrl-C stops it)
triton: setup
    python -m quotaflow.triton.server --model-repository triton_models

# the whole system on this machine until Ctrl-C: the API, every agent, Triton if needed
up: setup services
    quotaflow up

# sustained HTTP load while processes are killed and servers restarted; then the proof
chaos *ARGS: setup services
    python -m quotaflow.chaos {{ARGS}}

# --- development --------------------------------------------------------------------

# create .venv and install quotaflow with its dev and Triton extras
setup:
    bash infra/scripts/setup.sh

# unit tests and the tests against the real servers
test *ARGS: setup services
    python -m pytest {{ARGS}}

# ruff and mypy (strict)
lint: setup
    ruff check .
    ruff format --check .
    mypy

# --- benchmarks (each prints one JSON object on its last line) ---------------------

# raw rstream vs the EventLog, and raw aiokafka vs the Kafka EventLog (tansu): publish and consume rates, 200k events
bench-log: setup services
    python -m bench.log_rates

# raw consume + re-publish vs a pass-through agent
bench-agents: setup services
    python -m bench.agent_rates

# quota decisions/s and Redis view events/s vs the raw ceiling
bench-quota: setup services
    python -m bench.quota_rates

# the inference agent with and without Triton's dynamic batching (echo model)
bench-inference: setup services
    python -m bench.inference_rates

# replay (rebuild into scratch) and audit rates over 500k events vs raw consume
bench-replay: setup services
    python -m bench.replay_rates

# open-loop HTTP load on POST /v1/requests vs /healthz (500, 1000, 2000 req/s)
bench-ingress: setup services
    python -m bench.ingress_rates

# billing view rebuild rate vs raw consume+decode
bench-billing: setup services
    python -m bench.billing_rates

# 100 req/s through the API for 10 min (--duration, --rate), each component's memory sampled
soak *ARGS: setup services
    python -m bench.soak {{ARGS}}
