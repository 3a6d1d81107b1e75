"""The metric names that PromQL queries (dashboards, KEDA triggers) refer to, and the names
quotaflow's processes export."""

from __future__ import annotations

import importlib
import re

from prometheus_client import REGISTRY, Metric

#: Triton's own metrics the chart and the dashboard query (checked against a live tritonserver
#: in test_metrics_live.py).
TRITON_METRICS = frozenset({"nv_inference_queue_duration_us", "nv_inference_request_success"})

_NAME = re.compile(r"\b((?:quotaflow|nv)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def referenced(expr: str) -> set[str]:
    """The quotaflow_* and nv_* series names in a PromQL expression."""
    return set(_NAME.findall(expr))


def series_names(metric: Metric) -> set[str]:
    return {metric.name + suffix for suffix in _SUFFIXES.get(metric.type, ("",))}


def exported() -> set[str]:
    """Every series name the quotaflow metrics modules define (in this process's registry)."""
    for module in (
        "streams.runtime.metrics",
        "quotaflow.observability.tokens",
        "quotaflow.observability.triton_calls",
    ):
        importlib.import_module(module)  # registers its metrics
    return {
        name
        for metric in REGISTRY.collect()
        if metric.name.startswith("quotaflow_")
        for name in series_names(metric)
    }


def balanced(expr: str) -> bool:
    """Brackets nest properly (outside quoted label values)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack
