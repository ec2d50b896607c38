"""A property-based fuzz of the whole web API from its own OpenAPI schema (schemathesis), on 127.0.0.1.

Every operation of ``/api/openapi.json`` — the fixed endpoints and one ``POST /api/tools/<name>/jobs`` per
registered tool, its body the tool's options schema — gets requests generated from its schema (path and query
parameters, JSON bodies, uploads). Every answer must be no 5xx, a documented status code, a documented content
type and, for JSON, match the documented schema (errors: the one ``Error`` object). Bounded: a few derandomized
examples per operation on a tiny model with a low cost limit, so fuzzed jobs are cheap or refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

import convscope as cs
import convscope.web as web

EXAMPLES = 6  # per operation: ~70 operations, a few hundred requests in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[web.Server]:
    with web.make_app([cs.load_model("shapes_biased")], port=0, max_forwards=200, max_queued=4, max_upload_bytes=200_000).start() \
            as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: web.Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: Any, fuzzed_server: web.Server) -> None:
    case.call_and_validate(checks=CHECKS, timeout=60)


def test_the_schema_documents_every_tool_and_only_json_errors(api_schema: Any, fuzzed_server: web.Server) -> None:
    import requests

    document = requests.get(f"{fuzzed_server.url}api/openapi.json", timeout=60).json()
    assert {f"/api/tools/{t.name}/jobs" for t in cs.registry.tools()} <= set(document["paths"])
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's own error body is not what we send
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")) or code == "default":
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, code)
