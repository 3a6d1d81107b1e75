"""Schemathesis against /openapi.json over real HTTP: no input gives a 5xx, and every answer
matches the documented schema (a bounded number of examples per operation, valid and invalid
ones mixed).

Two of schemathesis's checks are left out. ``positive_data_acceptance``: a schema-valid request
may still be refused on purpose, by rules a JSON schema cannot state (the prompt plus
``max_tokens`` must fit the model's context; the prompt must fit ``max_prompt_chars``; a tenant
must exist). ``negative_data_rejection``: every call gets a valid key and half of them the
tenant's own id, which turns some generated invalid requests into valid ones."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from quotaflow.settings import Settings
from tests.conftest import RUN_ID
from tests.ingress.server import ServedDeployment

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXAMPLES = 40
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


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
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        fuzz(served, result.ok(), session, failures, statuses)
    assert failures == []
    print(sorted(statuses.items()))
    # the fuzzing got past validation and auth, too
    assert statuses[("POST /v1/requests", 202)] > 0
    assert statuses[("POST /v1/requests", 422)] > 0
    assert statuses[("POST /v1/admin/tenants", 201)] > 0
    assert statuses[("GET /v1/tenants/{tenant}/usage", 200)] > 0


def fuzz(
    served: ServedDeployment,
    operation: APIOperation[Any, Any, Any, Any],
    session: requests.Session,
    failures: list[str],
    statuses: Counter[tuple[str, int]],
) -> None:
    """Call one operation with valid and invalid inputs (the admin key on admin routes, the
    tenant's key elsewhere, the tenant's own id in half the tenant paths)."""
    key = served.admin_key if operation.path.startswith("/v1/admin") else served.tenant_key
    headers = {"Authorization": f"Bearer {key}"}
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, own_tenant=st.booleans())
    def run(case: schemathesis.Case[Any], own_tenant: bool) -> None:
        if own_tenant and case.path_parameters and "tenant" in case.path_parameters:
            case.path_parameters["tenant"] = served.tenant
        response = case.call(base_url=served.url, session=session, headers=headers)
        statuses[(f"{case.method} {operation.path}", response.status_code)] += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
        case.validate_response(
            response,
            headers=headers,
            excluded_checks=[positive_data_acceptance, negative_data_rejection],
        )

    run()
