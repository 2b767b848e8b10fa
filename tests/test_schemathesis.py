"""Schemathesis against a real server, from the OpenAPI document it serves (issue #7).

spec/http-api.md is the contract: a healthy server answers no request with a 5xx; every answer
has a status code, content type, headers and body that `/openapi.json` documents; every 4xx
carries a one-line text/plain message, and every rejection is a 400 whose message starts with
a phrase of the contract's table (clients match on it); a wrong method is a 405 with `Allow`.

Every operation runs the examples, coverage and fuzzing phases (bounded, derandomized and
seeded, so CI is reproducible). The cases come from `api.openapi.document()` at collection
time, when no server runs yet (schemathesis' lazy `from_fixture` loader fails on pytest 9.2);
the first test pins it to what the running server serves at /openapi.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api import openapi
from loader.settings import Settings
from tests.conftest import Server, basic, load_case

pytestmark = pytest.mark.slow

PHRASES = (
    "Missing Authorization Header",
    "Invalid Authorization Header",
    "Request size too large",
    "Invalid JSON",
    "Invalid event",  # also the start of "Invalid event type"
    "Empty batch payload",
    "Request neither has anonymousId nor userId",
    "Missing required field",
    "Request timeout",
)
"""How a rejection's message starts (spec/http-api.md "Responses"; api/openapi.py lists them)."""
MISSING_KEY, INVALID_KEY = PHRASES[:2]
WRONG_KEY = "not-a-write-key"
BEACON = "/beacon/v1/batch"
BOUNDED = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
GOLDEN = ("alias", "group", "identify", "page", "screen", "track")
"""Calls with a valid event in tests/cases/<call>.golden.json; merge has none there."""
MERGE = {
    "userId": "user-1",
    "mergeProperties": [
        {"type": "email", "value": "a@example.com"},
        {"type": "user_id", "value": 7},
    ],
}


@schemathesis.check
def rejection_carries_message(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx carries a one-line text/plain message; a 400 starts with a contract phrase."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("text/plain"), f"a {response.status_code} as {content_type!r}"
    message = response.text.rstrip("\n")
    assert message.strip(), f"a {response.status_code} without a message"
    assert "\n" not in message, f"a message of several lines: {message!r}"
    if response.status_code == 400:
        assert message.startswith(PHRASES), f"a message outside the contract: {message!r}"
    return True


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.unsupported_method,  # spec: a wrong method is a 405 with an Allow header
    rejection_carries_message,
]

schema = schemathesis.openapi.from_dict(openapi.document(), config=schemathesis.Config(seed=7))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    server = Server(
        Settings(database=root / "warehouse.duckdb", spool_dir=root / "spool"),
        root / "server.log",
    )
    try:  # stop() also closes the pipes of a server that failed to start
        server.start()
        assert server.write_key, "the first start prints the default source's write key"
        yield server
    finally:
        server.stop()


def test_the_server_serves_the_document_under_test(running: Server) -> None:
    served = httpx.get(running.url + "/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == orjson.loads(orjson.dumps(openapi.document()))


@schema.parametrize()
@BOUNDED
def test_every_operation_conforms(case: schemathesis.Case[Any], running: Server) -> None:
    """Authenticated as the default source: Basic with the write key, or the beacon's query."""
    assert running.write_key is not None
    if case.operation.path == BEACON:
        case.query["writeKey"] = running.write_key
    case.call_and_validate(
        base_url=running.url, auth=(running.write_key, ""), checks=CHECKS, timeout=30
    )


@schema.include(method="POST").parametrize()
@BOUNDED
def test_ingest_without_a_valid_key_is_rejected_with_a_message(
    case: schemathesis.Case[Any], running: Server
) -> None:
    """A key no source has, then no key at all: a 400 naming the Authorization problem,
    whatever the body (authentication comes before the body is read). Negative cases that
    drop the credential stay missing-key cases, so the phrase follows what was sent."""
    beacon = case.operation.path == BEACON
    for key in (WRONG_KEY, None):
        case.headers.pop("Authorization", None)
        case.query.pop("writeKey", None)
        if key is not None and beacon:
            case.query["writeKey"] = key
        elif key is not None:
            case.headers.update(basic(key))
        response = case.call_and_validate(base_url=running.url, checks=CHECKS, timeout=30)
        if case.method.upper() != "POST":  # coverage also tries undocumented methods: 405
            continue
        sent = response.request
        if beacon:
            sent_key = bool(parse_qs(urlsplit(str(sent.url)).query).get("writeKey"))
        else:
            sent_key = "Authorization" in sent.headers
        assert response.status_code == 400
        assert response.text.startswith(INVALID_KEY if sent_key else MISSING_KEY), response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        *(pytest.param(f"/v1/{call}", load_case(f"{call}.golden"), id=call) for call in GOLDEN),
        pytest.param("/v1/merge", MERGE, id="merge"),
        pytest.param("/v1/batch", load_case("batch.seed"), id="batch"),
        pytest.param(BEACON, load_case("batch.seed"), id="beacon"),
    ],
)
def test_accepted_events_conform(running: Server, path: str, body: Any) -> None:
    """Generated bodies are almost never valid events (the document's body schema is only an
    object), so the 200 `OK` is checked on one valid request per ingest operation."""
    assert running.write_key is not None
    query = {"writeKey": running.write_key} if path == BEACON else None
    media_type = "text/plain" if path == BEACON else "application/json"  # as the browser beacon
    case = schema[path]["POST"].Case(
        body=body if media_type == "application/json" else orjson.dumps(body).decode(),
        media_type=media_type,
        query=query,
    )
    response = case.call_and_validate(
        base_url=running.url, auth=(running.write_key, ""), checks=CHECKS, timeout=30
    )
    assert (response.status_code, response.text) == (200, "OK")
