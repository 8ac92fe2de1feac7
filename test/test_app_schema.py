"""Property-based requests from the service's own OpenAPI schema (schemathesis): never a server error,
and every response matching the schema. Bounded: a few examples per operation, derandomised."""
from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in requirements-dev.txt")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from app_helpers import Server, random_mask, write_mask  # noqa: E402

EXAMPLES_PER_OPERATION = 8
ORGANISER = "organiser-token-for-schema-tests-01"
AUTH = {"Authorization": f"Bearer {ORGANISER}"}


@pytest.mark.slow
def test_no_server_error_and_responses_match_the_schema(tmp_path):
    write_mask(random_mask(np.random.default_rng(1), density=0.1), tmp_path / "gt" / "CASE_A.mha")
    with Server(data_dir=tmp_path / "data", args=["--max-upload", "1MB", "--ground-truth", str(tmp_path / "gt")],
                env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 9
        statuses: list[int] = []

        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call_and_validate(base_url=server.url, headers=AUTH,
                                                  checks=[not_a_server_error, response_schema_conformance])
                statuses.append(response.status_code)

            check()
    assert len(statuses) >= 2 * len(operations)
    assert any(200 <= s < 300 for s in statuses) and all(s < 500 for s in statuses)
