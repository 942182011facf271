"""schemathesis against the live server with /openapi.json: no 5xx, every answer as documented."""

from __future__ import annotations

import msgpack
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from schemathesis.checks import positive_data_acceptance

from harness import load_fixture_events, post_batch

FIXTURE = load_fixture_events()


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx, value):
    return value if isinstance(value, bytes) else msgpack.packb(value)


@pytest.fixture
def live(make_server):
    server = make_server(rate_limit=0.0)
    project = server.create_project()
    for sid in ("s1", "s2"):
        assert post_batch(server.url, project.token, sid, FIXTURE[:50], batch_id="b").status_code == 200
    server.flush()
    return server, project


def test_openapi_document_is_served_and_names_every_route(live):
    server, _project = live
    doc = requests.get(f"{server.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/recordings", "/api/projects/{project}/sessions", "/api/projects/{project}/sessions/{session}",
                 "/api/projects/{project}/sessions/{session}/events", "/api/projects/{project}/sessions/{session}/share",
                 "/healthz", "/readyz", "/metrics", "/share/{token}"):
        assert path in doc["paths"], path
    assert "delete" in doc["paths"]["/api/projects/{project}/sessions/{session}"]
    # Every API route the server has is documented (UI pages and static files are not the API).
    app = server._runner.app
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"
              and r.resource.canonical.startswith(("/api/", "/v1/", "/share/", "/healthz", "/readyz", "/metrics", "/openapi.json"))}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served <= documented, served - documented


def test_every_operation_conforms_to_the_document(live):
    server, project = live
    schema = schemathesis.openapi.from_dict(requests.get(f"{server.url}/openapi.json").json())
    headers = {"Authorization": f"Bearer {project.api_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            # The schema cannot say "milliseconds since 2000" or "a valid token", so a schema-valid body
            # may still be refused with a documented 4xx: that is what the conformance checks verify.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        check()
    assert requests.get(f"{server.url}/healthz").status_code == 200
