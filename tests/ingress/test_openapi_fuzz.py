"""Schemathesis against /openapi.json over real HTTP: no input gives a 5xx, and every answer
matches the documented schema (a bounded number of examples per operation).

``positive_data_acceptance`` is left out: a schema-valid request may still be refused on
purpose, by rules a JSON schema cannot state (the prompt plus ``max_tokens`` must fit the
model's context; the prompt must fit ``max_prompt_chars``; a tenant must exist)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from quotaflow.settings import Settings
from tests.conftest import RUN_ID
from tests.ingress.server import ServedDeployment

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXAMPLES = 40


@pytest.fixture(scope="module")
def served() -> Iterator[ServedDeployment]:
    unique = f"t{RUN_ID}-f{uuid.uuid4().hex[:8]}"
    with ServedDeployment(Settings(), unique, decision_timeout_s=1.0) as s:
        yield s


def test_no_input_gives_a_server_error(served: ServedDeployment) -> None:
    response = requests.get(f"{served.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    schema = schemathesis.openapi.from_dict(response.json())
    session = requests.Session()
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        admin = operation.path.startswith("/v1/admin")

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), own_tenant=st.booleans())
        def run(case: schemathesis.Case, own_tenant: bool) -> None:
            nonlocal calls
            if own_tenant and case.path_parameters and "tenant" in case.path_parameters:
                case.path_parameters["tenant"] = served.tenant
            key = served.admin_key if admin else served.tenant_key
            headers = {"Authorization": f"Bearer {key}"}
            response = case.call(base_url=served.url, session=session, headers=headers)
            calls += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
            case.validate_response(
                response, headers=headers, excluded_checks=[positive_data_acceptance]
            )

        run()
    assert calls >= EXAMPLES
    assert failures == []
