"""What the ScaledObjects and the dashboard query is really exported by running processes.

* An agent process (``quotaflow run``, the real CLI, on a unique topology against the real
  RabbitMQ) serves /metrics on ``QUOTAFLOW_METRICS_PORT``: after traffic it has the lag gauge
  for every partition it owns and the token counters, to the token, as the decisions in the
  log say.
* A real tritonserver exports the series the Triton trigger divides.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from events import InferenceCompleted, InferenceRequested, QuotaPolicy, TenantRegistered
from events.model import RequestSpec
from quotaflow.observability.tokens import token_deltas
from quotaflow.triton.server import TritonHandle, free_port
from streams.rabbit_log import RabbitEventLog
from streams.runtime.app import App
from streams.topics import Topology
from tests.deploy.chart import VALUES, render
from tests.deploy.promql import TRITON_METRICS, referenced
from tests.runtime.helpers import read_all
from tests.runtime.processes import spawn_agent, terminate

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, ""
    except OSError:
        return 0, ""


SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")


def parse(text: str) -> tuple[Samples, set[str]]:
    """The samples, and the names of the series that have a value as Prometheus stores them
    (prometheus_client's parser would add ``_total`` to Triton's counters)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    names = {
        m.group(1)
        for line in text.splitlines()
        if not line.startswith("#") and (m := SERIES.match(line))
    }
    return samples, names


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def registered(tenant: str, budget: int) -> TenantRegistered:
    return TenantRegistered(
        tenant_id=tenant,
        name=tenant,
        api_key_hash=hashlib.sha256(tenant.encode()).hexdigest(),
        policy=QuotaPolicy(token_budget=budget),
    )


def request(tenant: str, i: int) -> InferenceRequested:
    return InferenceRequested(
        tenant_id=tenant,
        request_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{i}"),
        spec=RequestSpec(model="echo", prompt=f"q{i}", max_tokens=90),
        estimated_prompt_tokens=10,
    )


@pytest.mark.services
@pytest.mark.slow
async def test_an_agent_process_exports_lag_and_token_counters(
    rabbit_log: RabbitEventLog, topology: Topology, tmp_path: Path
) -> None:
    # two tenants, one per partition; "capped" can afford 5 of its 12 requests
    tenants = {"roomy": 1_000_000, "capped": 500}
    assert {topology.requests.stream_for(t) for t in tenants} == set(topology.requests.streams)
    app = App("test", rabbit_log, topology=topology)
    requests = app.topic(topology.requests)
    await requests.send_many([registered(t, budget) for t, budget in tenants.items()])
    sent = [request(t, i) for t in tenants for i in range(12)]
    await requests.send_many(sent)
    # half of roomy's requests complete, each using 10 + 30 of its 100 reserved tokens
    await requests.send_many(
        [
            InferenceCompleted(
                tenant_id=r.tenant_id,
                request_id=r.request_id,
                model="echo",
                prompt_tokens=10,
                completion_tokens=30,
                latency_ms=5.0,
            )
            for r in sent[:6]
        ]
    )

    port = free_port()
    env = {
        "QUOTAFLOW_STREAM_PREFIX": topology.prefix,
        "QUOTAFLOW_PARTITIONS": str(topology.partitions),
        "QUOTAFLOW_METRICS_HOST": "127.0.0.1",
        "QUOTAFLOW_METRICS_PORT": str(port),
    }
    log = tmp_path / "agent.log"
    proc = spawn_agent(
        ["quota", "token-meter"], env, log=log, factory="tests.deploy.metrics_app:build"
    )
    try:
        # the decisions the quota agent made, as the log has them
        expected: dict[tuple[str, str, str], int] = defaultdict(int)
        deadline = time.monotonic() + 90
        decisions: list[object] = []
        while time.monotonic() < deadline:
            decisions = list(await read_all(rabbit_log, topology.quota.streams))
            if len(decisions) >= len(sent) + 6:
                break
            await asyncio.sleep(0.5)
        assert len(decisions) == len(sent) + 6, log.read_text()[-3000:]
        for event in await read_all(rabbit_log, topology.quota.streams):
            for d in token_deltas(event):
                expected[(d.tenant, d.kind, d.reason)] += d.tokens
        assert expected[("roomy", "reserved", "")] == 1200
        assert expected[("capped", "reserved", "")] == 500
        assert expected[("roomy", "settled", "")] == 240
        assert expected[("roomy", "released", "unused")] == 360

        # what the process exports, once the meter and the lag measurement caught up
        names = {
            "reserved": "quotaflow_tokens_reserved_total",
            "settled": "quotaflow_tokens_settled_total",
            "released": "quotaflow_tokens_released_total",
        }
        deadline = time.monotonic() + 60
        while True:
            status, text = await asyncio.to_thread(scrape, port)
            samples, exported = parse(text) if status == 200 else ({}, set())
            got = {
                key: value(
                    samples,
                    names[key[1]],
                    tenant=key[0],
                    **({"reason": key[2]} if key[1] == "released" else {}),
                )
                for key in expected
            }
            lags = {
                (agent, stream): value(
                    samples, "quotaflow_agent_lag", agent=agent, partition=str(p), stream=stream
                )
                for agent, topic in (("quota", topology.requests), ("token-meter", topology.quota))
                for p, stream in enumerate(topic.streams)
            }
            if got == expected and all(v == 0 for v in lags.values()):
                break
            assert time.monotonic() < deadline, (status, got, expected, lags)
            await asyncio.sleep(0.5)

        decided = value(
            samples,
            "quotaflow_requests_decided_total",
            tenant="capped",
            decision="rejected",
            reason="budget",
        )
        assert decided == 7
        assert value(samples, "quotaflow_agent_owned_partitions", agent="quota") == 2
        assert (await asyncio.to_thread(scrape, port, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(scrape, port, "/readyz"))[0] == 200

        # every quotaflow series the production ScaledObjects query is among them
        queried: set[str] = set()
        for scaled in render(VALUES["production"], show_only="ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    queried |= referenced(trigger["metadata"]["query"])
        ours = {n for n in queried if n.startswith("quotaflow_")}
        assert ours == {"quotaflow_agent_lag", "quotaflow_tokens_reserved_total"}
        assert ours <= exported
    finally:
        assert terminate(proc) == 0, log.read_text()[-3000:]


@pytest.mark.triton
async def test_triton_exports_the_series_its_trigger_divides(triton_server: TritonHandle) -> None:
    import tritonclient.grpc.aio as grpcaio

    from quotaflow.triton.client import generate

    client = grpcaio.InferenceServerClient(triton_server.grpc_url)
    try:
        await generate(client, "echo", prompt="hello", max_tokens=4)
    finally:
        await client.close()
    port = int(triton_server.metrics_url.rsplit(":", 1)[1].split("/")[0])
    status, text = await asyncio.to_thread(scrape, port)
    assert status == 200
    samples, names = parse(text)
    assert names >= TRITON_METRICS
    success = [
        v
        for (n, labels), v in samples.items()
        if n.startswith("nv_inference_request_success") and ("model", "echo") in labels
    ]
    assert success
    assert success[0] >= 1
