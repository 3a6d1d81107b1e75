"""The Helm chart renders for every values file, and everything it renders validates offline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from quotaflow.observability.config import ObservabilitySettings
from quotaflow.settings import Settings
from tests.deploy.chart import (
    CHART,
    VALUES,
    Manifest,
    RenderError,
    helm,
    render,
    validate,
)

VALUE_FILES = list(VALUES.items())
IDS = [name for name, _ in VALUE_FILES]


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def component(doc: Manifest) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


@pytest.fixture(scope="module", params=VALUE_FILES, ids=IDS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name, values = request.param
    return name, render(values)


@pytest.mark.parametrize(("name", "values"), VALUE_FILES, ids=IDS)
def test_helm_lint_passes(name: str, values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict"]
    args += ["--values", str(values)] if values else ["--set", "secrets.adminKey=k-123456"]
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_manifest_validates_against_its_schema(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == 8, kinds  # ingress, 6 agent pods, triton
    assert kinds["Job"] == 1
    assert kinds["ConfigMap"] == 1
    assert kinds["Service"] == 3
    if name != "dev":
        assert kinds["ScaledObject"] >= 2  # the inference agent and Triton at least
    errors = []
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {exc}")
    assert not errors, "\n".join(errors)


def test_a_deployment_per_component_running_its_agents(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    deployments = {component(d): d for d in by_kind(docs, "Deployment").values()}
    assert set(deployments) == {
        "ingress",
        "quota",
        "inference",
        "quota-view",
        "billing",
        "tenant-directory",
        "request-results",
        "triton",
    }
    runs = {
        c: container(d)["args"] for c, d in deployments.items() if c not in ("ingress", "triton")
    }
    assert runs["billing"] == ["run", "billing", "billing-catalog", "--ownership", "pg"]
    assert runs["inference"] == ["run", "inference", "--ownership", "pg"]
    assert container(deployments["ingress"])["args"][0] == "serve"


def test_probes_ingress_on_healthz_readyz_agents_on_the_metrics_port(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    for deployment in by_kind(docs, "Deployment").values():
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if component(deployment) == "ingress":
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert ports == {"http": 8080}
        elif component(deployment) == "triton":
            assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
            assert set(ports) == {"http", "grpc", "metrics"}
        else:
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert ports == {"metrics": 9100}
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == "9100"


def test_partitioned_agents_never_exceed_the_partition_count(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    partitions = int(by_kind(docs, "ConfigMap")["qf-quotaflow"]["data"]["QUOTAFLOW_PARTITIONS"])
    deployments = by_kind(docs, "Deployment")
    agents = {
        n for n, d in deployments.items() if d["metadata"]["labels"].get("quotaflow.io/agent")
    }
    assert len(agents) == 6
    for name in agents:
        assert deployments[name]["spec"].get("replicas", 1) <= partitions
    for scaled in by_kind(docs, "ScaledObject").values():
        if scaled["spec"]["scaleTargetRef"]["name"] in agents:
            assert scaled["spec"]["maxReplicaCount"] <= partitions


def test_max_replicas_are_capped_at_partitions_from_values() -> None:
    docs = render(set_values=["partitions=3", "agents.inference.autoscaling.maxReplicas=50"])
    scaled = by_kind(docs, "ScaledObject")["qf-quotaflow-inference"]
    assert scaled["spec"]["maxReplicaCount"] == 3
    docs = render(set_values=["partitions=64", "agents.inference.autoscaling.maxReplicas=50"])
    assert by_kind(docs, "ScaledObject")["qf-quotaflow-inference"]["spec"]["maxReplicaCount"] == 50


def test_values_are_checked_against_the_chart_schema() -> None:
    with pytest.raises(RenderError, match="autoscalling"):
        render(set_values=["agents.inference.autoscalling.enabled=true"])
    with pytest.raises(RenderError, match="partitions"):
        render(set_values=["partitions=0"])


def test_more_replicas_than_partitions_is_refused() -> None:
    with pytest.raises(RenderError, match="exceeds partitions"):
        render(set_values=["partitions=2", "agents.quota.replicas=3"])


def test_inference_scales_on_lag_and_reserved_tokens_triton_on_queue_time() -> None:
    docs = render(VALUES["production"])
    scaled = by_kind(docs, "ScaledObject")
    inference = scaled["qf-quotaflow-inference"]["spec"]
    queries = {t["name"]: t["metadata"]["query"] for t in inference["triggers"]}
    assert all(t["type"] == "prometheus" for t in inference["triggers"])
    assert 'quotaflow_agent_lag{agent=~"inference",namespace="quotaflow"}' in queries["lag"]
    assert "rate(quotaflow_tokens_reserved_total{" in queries["reserved-tokens"]
    assert inference["minReplicaCount"] == 2
    assert inference["maxReplicaCount"] == 16

    triton = scaled["qf-quotaflow-triton"]["spec"]
    (queue,) = triton["triggers"]
    assert queue["metricType"] == "Value"
    assert "nv_inference_queue_duration_us" in queue["metadata"]["query"]
    # no partitions bound Triton
    assert triton["maxReplicaCount"] == 8

    cpu = render(VALUES["production"], set_values=["triton.autoscaling.cpuUtilization=70"])
    triggers = by_kind(cpu, "ScaledObject")["qf-quotaflow-triton"]["spec"]["triggers"]
    assert [t["type"] for t in triggers] == ["prometheus", "cpu"]


def test_scaled_deployments_leave_replicas_to_keda() -> None:
    docs = render(VALUES["production"])
    deployments = by_kind(docs, "Deployment")
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in by_kind(docs, "ScaledObject").values()}
    for name, deployment in deployments.items():
        assert ("replicas" in deployment["spec"]) == (name not in targets), name


def test_triton_on_cpu_by_default_and_on_a_gpu_in_production() -> None:
    cpu = container(by_kind(render(), "Deployment")["qf-quotaflow-triton"])
    assert not any(a.startswith("--model-config-name") for a in cpu["args"])
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})

    deployment = by_kind(render(VALUES["production"]), "Deployment")["qf-quotaflow-triton"]
    gpu = container(deployment)
    assert "--model-config-name=gpu" in gpu["args"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {v["name"] for v in pod["volumes"]} >= {"dshm"}


def test_the_setup_job_is_a_hook_declaring_streams_and_migrating() -> None:
    docs = render()
    job = by_kind(docs, "Job")["qf-quotaflow-setup"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == ["streams", "create"]
    migrate = pod["containers"][0]
    assert migrate["command"] == ["python", "-m", "projections.billing"]
    # hooks run before the release's ConfigMap and ServiceAccount exist
    assert "envFrom" not in migrate
    assert "serviceAccountName" not in pod
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in migrate["env"] if "valueFrom" in e}
    hook_secrets = {
        n
        for n, s in by_kind(docs, "Secret").items()
        if s["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-install,pre-upgrade"
        and int(s["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    }
    assert refs == hook_secrets == {"qf-quotaflow-setup"}

    prod = render(VALUES["production"])
    assert not by_kind(prod, "Secret")  # secrets.existingSecret: the chart makes none
    env = by_kind(prod, "Job")["qf-quotaflow-setup"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env["env"] if "valueFrom" in e} == {
        "quotaflow-credentials"
    }


def test_the_admin_key_is_required_unless_an_existing_secret_is_named() -> None:
    with pytest.raises(RenderError, match=r"secrets\.adminKey is required"):
        render(set_values=["secrets.existingSecret="])
    secret = by_kind(render(), "Secret")["qf-quotaflow"]
    assert set(secret["stringData"]) == {
        "QUOTAFLOW_RABBITMQ_URL",
        "QUOTAFLOW_REDIS_URL",
        "QUOTAFLOW_POSTGRES_DSN",
        "QUOTAFLOW_ADMIN_KEY",
    }


def test_every_setting_the_chart_sets_is_one_quotaflow_reads(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    known = {f"QUOTAFLOW_{f.upper()}" for f in Settings.model_fields}
    known |= {f"QUOTAFLOW_{f.upper()}" for f in ObservabilitySettings.model_fields}
    keys = set(by_kind(docs, "ConfigMap")["qf-quotaflow"]["data"])
    for secret in by_kind(docs, "Secret").values():
        keys |= set(secret["stringData"])
    for deployment in by_kind(docs, "Deployment").values():
        keys |= {e["name"] for e in container(deployment).get("env", [])}
    ours = {k for k in keys if k.startswith("QUOTAFLOW_")}
    assert ours - known == set()
    assert keys - ours <= {"HOME", "OTEL_EXPORTER_OTLP_ENDPOINT"}


def test_a_changed_setting_rolls_the_pods() -> None:
    def checksum(docs: list[Manifest]) -> str:
        quota = by_kind(docs, "Deployment")["qf-quotaflow-quota"]
        return str(quota["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(render()) == checksum(render())
    assert checksum(render()) != checksum(render(set_values=["streamPrefix=blue-"]))
