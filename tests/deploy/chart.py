"""Rendering the Helm chart and validating what it renders, offline.

* Kubernetes kinds: against the JSON schemas that ``kubernetes-validate`` bundles (strict:
  unknown fields are errors), for :data:`KUBE_VERSION`.
* KEDA ``ScaledObject`` and prometheus-operator ``PodMonitor``: no JSON schema of them ships
  in a package here, so each is parsed by the pydantic models that ``cloudcoil-models-keda``
  (KEDA 2.16) and ``cloudcoil-models-prometheus-operator`` generate from the projects' CRD
  OpenAPI schemas, and must survive the round trip unchanged: a field the CRD does not know
  is dropped by the model and shows up as a difference; a wrong type fails to parse.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from pydantic import BaseModel

from tests.deploy.helm_tool import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "helm" / "quotaflow"
VALUES = {
    "default": None,
    "dev": CHART / "values-dev.yaml",
    "production": CHART / "values-production.yaml",
}
KUBE_VERSION = "1.30.0"
# what the chart may render besides the Kubernetes kinds
CRD_API_VERSIONS = ("keda.sh/v1alpha1", "monitoring.coreos.com/v1")

Manifest = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ensure_helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(
    values: Path | None = None,
    *,
    set_values: Sequence[str] = (),
    namespace: str = "quotaflow",
    release: str = "qf",
    show_only: str | None = None,
) -> list[Manifest]:
    """``helm template`` the chart; every document, hooks included, parsed."""
    text = render_text(values, set_values=set_values, namespace=namespace, release=release)
    docs = [d for d in yaml.safe_load_all(text) if d]
    if show_only is not None:
        docs = [d for d in docs if d["kind"] == show_only]
    return docs


def render_text(
    values: Path | None = None,
    *,
    set_values: Sequence[str] = (),
    namespace: str = "quotaflow",
    release: str = "qf",
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    for api in CRD_API_VERSIONS:
        args += ["--api-versions", api]
    if values is not None:
        args += ["--values", str(values)]
    if values is None and not any(s.startswith("secrets.") for s in set_values):
        args += ["--set", "secrets.adminKey=test-admin-key"]  # the one required value
    for item in set_values:
        args += ["--set", item]
    done = helm(*args)
    if done.returncode != 0:
        raise RenderError(done.stderr)
    return done.stdout


class RenderError(RuntimeError):
    """helm refused to render (a ``fail``/``required`` message, or a template error)."""


def validate_kubernetes(doc: Manifest) -> None:
    """Raise unless ``doc`` is valid for :data:`KUBE_VERSION` (unknown fields included)."""
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _crd_model(doc: Manifest) -> type[BaseModel]:
    api, kind = doc["apiVersion"], doc["kind"]
    if (api, kind) == ("keda.sh/v1alpha1", "ScaledObject"):
        from cloudcoil.models.keda.v1alpha1 import ScaledObject

        return ScaledObject
    if (api, kind) == ("monitoring.coreos.com/v1", "PodMonitor"):
        from cloudcoil.models.prometheus_operator.v1 import PodMonitor

        return PodMonitor
    raise KeyError(f"no schema for {api} {kind}")


def differences(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Where ``kept`` (the model's dump) lost or changed something of ``sent``."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{path or '/'}: became {type(kept).__name__}"]
        out: list[str] = []
        for key, value in sent.items():
            if key not in kept:
                out.append(f"{path}/{key}: unknown to the schema")
            else:
                out.extend(differences(value, kept[key], f"{path}/{key}"))
        return out
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [f"{path}: list changed"]
        return [
            d
            for i, (a, b) in enumerate(zip(sent, kept, strict=True))
            for d in differences(a, b, f"{path}/{i}")
        ]
    return [] if sent == kept and type(sent) is type(kept) else [f"{path}: {sent!r} → {kept!r}"]


def validate_crd(doc: Manifest) -> None:
    """Raise unless ``doc`` parses as its CRD's model and loses nothing on the way."""
    model = _crd_model(doc).model_validate(doc)
    kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    lost = differences(doc, kept)
    if lost:
        raise ValueError(f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(lost))


def validate(doc: Manifest) -> None:
    if doc["apiVersion"] in CRD_API_VERSIONS:
        validate_crd(doc)
    else:
        validate_kubernetes(doc)
