"""The Grafana dashboard and the KEDA queries ask only for series quotaflow or Triton export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.deploy.chart import VALUES, render
from tests.deploy.promql import TRITON_METRICS, balanced, exported, referenced

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "quotaflow-dashboard.json"


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out: list[dict[str, Any]] = dashboard["panels"]
    return out


def test_the_dashboard_is_a_grafana_model_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "quotaflow-overview"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "agent", "tenant"}
    for panel in panels():
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(t["expr"] for p in panels() for t in p.get("targets", []))
    for series in (
        "quotaflow_agent_lag",
        "quotaflow_agent_events_in_total",
        "quotaflow_agent_events_out_total",
        "quotaflow_decision_latency_seconds_bucket",
        "quotaflow_tokens_reserved_total",
        "quotaflow_triton_request_seconds_bucket",
        "quotaflow_agent_dead_letters_total",
    ):
        assert series in exprs, series


def test_every_queried_series_is_exported() -> None:
    known = exported() | TRITON_METRICS
    queries = [t["expr"] for p in panels() for t in p.get("targets", [])]
    for scaled in render(VALUES["production"], show_only="ScaledObject"):
        queries += [
            t["metadata"]["query"] for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"
        ]
    assert len(queries) > 15
    for expr in queries:
        assert balanced(expr), expr
        assert referenced(expr), expr
        assert referenced(expr) <= known, (expr, referenced(expr) - known)
