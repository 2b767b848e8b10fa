"""The OpenAPI document matches the routes the app serves (issue: reliability)."""

from __future__ import annotations

from starlette.routing import Route
from starlette.testclient import TestClient


def test_openapi_documents_exactly_the_routes_served(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    served = {
        (route.path, method.lower())
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == served


def test_openapi_error_responses_are_the_contracts(client: TestClient) -> None:
    """spec/http-api.md: rejections are 400 text/plain; overload is 503 with Retry-After."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, ops in paths.items():
        if "post" not in ops:
            continue
        responses = ops["post"]["responses"]
        assert set(responses) == {"200", "400", "503"}, path
        assert "text/plain" in responses["400"]["content"]
        assert "Retry-After" in responses["503"]["headers"]
