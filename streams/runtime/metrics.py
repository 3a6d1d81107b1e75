"""Prometheus metrics of the agent runtime (exposed by each process on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter(
    "quotaflow_agent_events_in", "Input records handled by an agent", ["agent", "partition"]
)
EVENTS_OUT = Counter(
    "quotaflow_agent_events_out", "Events an agent appended to the log", ["agent", "partition"]
)
ERRORS = Counter("quotaflow_agent_errors", "Agent failures by kind", ["agent", "partition", "kind"])
DEAD_LETTERS = Counter(
    "quotaflow_agent_dead_letters", "Records sent to the dead-letter stream", ["agent", "partition"]
)
LAG = Gauge(
    "quotaflow_agent_lag",
    "Offsets between a stream's tail and the agent's position (an upper bound on records)",
    ["agent", "partition", "stream"],
)
POSITION = Gauge(
    "quotaflow_agent_position", "Last processed offset per input stream", ["agent", "stream"]
)
FLUSH_SECONDS = Histogram(
    "quotaflow_agent_flush_seconds",
    "Time to make a batch's outputs durable",
    ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OWNED_PARTITIONS = Gauge(
    "quotaflow_agent_owned_partitions", "Partitions this replica processes", ["agent"]
)
