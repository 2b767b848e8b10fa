"""The HTTP contract of spec/http-api.md, through the app with its lifespan (TestClient)."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from api import admin
from loader.settings import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, Settings
from tests.conftest import app_client, basic, default_key, load_case, spooled

TRACK = {"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}


def _auth(key: str) -> dict[str, str]:
    return basic(key)


# -- spec/http-api.md "Responses": the error table, row by row ------------------------------

ERROR_ROWS = [
    pytest.param(
        "/v1/track",
        None,
        orjson.dumps(TRACK),
        "Missing Authorization Header",
        id="no-authorization-header",
    ),
    pytest.param(
        "/v1/track",
        {"Authorization": "Bearer abc"},
        orjson.dumps(TRACK),
        "Invalid Authorization Header",
        id="not-basic",
    ),
    pytest.param(
        "/v1/track",
        {"Authorization": "Basic %%%"},
        orjson.dumps(TRACK),
        "Invalid Authorization Header",
        id="bad-base64",
    ),
    pytest.param(
        "/v1/track",
        "unknown-key",
        orjson.dumps(TRACK),
        "Invalid Authorization Header",
        id="unknown-write-key",
    ),
    pytest.param("/v1/track", "KEY", b"", "Invalid JSON", id="empty-body"),
    pytest.param("/v1/track", "KEY", b'{"userId": "u1"', "Invalid JSON", id="truncated"),
    pytest.param("/v1/track", "KEY", b'{"userId": "u1"} x', "Invalid JSON", id="trailing-garbage"),
    pytest.param("/v1/track", "KEY", b'{"userId": "\xff"}', "Invalid JSON", id="bad-utf8"),
    pytest.param("/v1/track", "KEY", b"[1, 2]", "Invalid event", id="single-call-array"),
    pytest.param("/v1/batch", "KEY", b'{"batch": [1]}', "Invalid event", id="batch-element-scalar"),
    pytest.param("/v1/batch", "KEY", b'{"batch": []}', "Empty batch payload", id="batch-empty"),
    pytest.param("/v1/batch", "KEY", b'{"batch": null}', "Empty batch payload", id="batch-null"),
    pytest.param("/v1/batch", "KEY", b"{}", "Empty batch payload", id="batch-missing"),
    pytest.param(
        "/v1/batch",
        "KEY",
        b'{"batch": [{"userId": "u"}]}',
        "Invalid event type",
        id="batch-type-missing",
    ),
    pytest.param(
        "/v1/batch",
        "KEY",
        b'{"batch": [{"type": "jump", "userId": "u"}]}',
        "Invalid event type",
        id="batch-type-unknown",
    ),
    pytest.param(
        "/v1/track",
        "KEY",
        b'{"event": "x"}',
        "Request neither has anonymousId nor userId",
        id="no-identifiers",
    ),
    pytest.param(
        "/v1/track",
        "KEY",
        b'{"event": "x", "userId": " \\u200b "}',
        "Request neither has anonymousId nor userId",
        id="invisible-identifier",
    ),
    pytest.param(
        "/v1/track", "KEY", b'{"userId": "u"}', "Missing required field", id="track-without-event"
    ),
    pytest.param(
        "/v1/group", "KEY", b'{"userId": "u"}', "Missing required field", id="group-without-groupId"
    ),
    pytest.param(
        "/v1/alias",
        "KEY",
        b'{"userId": "u"}',
        "Missing required field",
        id="alias-without-previousId",
    ),
    pytest.param(
        "/v1/merge",
        "KEY",
        b'{"userId": "u", "mergeProperties": [{"type": "email"}]}',
        "Missing required field",
        id="merge-bad-properties",
    ),
    pytest.param(
        "/v1/track",
        "KEY",
        orjson.dumps({**TRACK, "properties": {"x": "a" * MAX_EVENT_BYTES}}),
        "Request size too large",
        id="event-over-32kb",
    ),
    pytest.param(
        "/v1/batch",
        "KEY",
        orjson.dumps(
            {"batch": [{**TRACK, "type": "track", "properties": {"x": "a" * 30_000}}] * 140}
        ),
        "Request size too large",
        id="batch-over-4mb",
    ),
]


@pytest.mark.parametrize(("path", "auth", "body", "message"), ERROR_ROWS)
def test_error_table_row_is_400_with_message_and_stores_nothing(
    client: TestClient,
    write_key: str,
    settings: Settings,
    path: str,
    auth: Any,
    body: bytes,
    message: str,
) -> None:
    """spec/http-api.md error table: 400, plain text starting with the phrase, nothing spooled."""
    headers: dict[str, str] = {}
    if auth == "KEY":
        headers = _auth(write_key)
    elif isinstance(auth, str):
        headers = _auth(auth)
    elif isinstance(auth, dict):
        headers = auth
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 400
    assert response.text.startswith(message), response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert spooled(settings) == []


def test_batch_is_all_or_nothing_and_names_the_index(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    batch = {"batch": [{**TRACK, "type": "track"}, {"type": "track", "event": "x"}]}
    response = client.post("/v1/batch", json=batch, headers=_auth(write_key))
    assert response.status_code == 400
    assert "batch index 1" in response.text
    assert spooled(settings) == []


def test_disabled_source_key_is_rejected_like_an_unknown_one(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    """Through the real admin channel, as `loader sources disable` does while serving."""
    admin.call(settings, "sources.disable", {"name": "default"})
    response = client.post("/v1/track", json=TRACK, headers=_auth(write_key))
    assert response.status_code == 400
    assert response.text.startswith("Invalid Authorization Header")
    admin.call(settings, "sources.enable", {"name": "default"})
    assert client.post("/v1/track", json=TRACK, headers=_auth(write_key)).status_code == 200


def test_auth_is_checked_before_the_body_is_read(client: TestClient) -> None:
    """rudder-gateway.md §3: an auth error wins over any body error."""
    response = client.post("/v1/track", content=b"not json", headers=_auth("nope"))
    assert response.text.startswith("Invalid Authorization Header")


def test_key_without_colon_is_taken_whole(client: TestClient, write_key: str) -> None:
    """spec/http-api.md Authentication: a decoded value with no colon is the key (Segment)."""
    header = {"Authorization": "basic " + base64.b64encode(write_key.encode()).decode()}
    assert client.post("/v1/track", json=TRACK, headers=header).status_code == 200


# -- success ----------------------------------------------------------------------------------


def test_success_is_200_ok_text_plain_and_spooled_enriched(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    response = client.post("/v1/track", json=TRACK, headers=_auth(write_key))
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["content-type"].startswith("text/plain")
    [record] = spooled(settings)
    assert record["source"] == "default"
    event = record["event"]
    assert event["type"] == "track"
    assert event["request_ip"] == "203.0.113.7"
    for field in (
        "messageId",
        "receivedAt",
        "sentAt",
        "timestamp",
        "originalTimestamp",
        "rudderId",
    ):
        assert isinstance(event[field], str) and event[field], field


def test_path_sets_the_type(client: TestClient, write_key: str, settings: Settings) -> None:
    client.post("/v1/page", json={"type": "track", "anonymousId": "a"}, headers=_auth(write_key))
    assert spooled(settings)[0]["event"]["type"] == "page"


def test_seed_batch_sample_is_accepted_in_order(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    """The seed document's /v1/batch sample, every call type."""
    body = load_case("batch.seed")
    response = client.post("/v1/batch", json=body, headers=_auth(write_key))
    assert response.status_code == 200
    types = [record["event"]["type"] for record in spooled(settings)]
    assert types == [event["type"] for event in body["batch"]]


def test_batch_sent_at_applies_to_events_without_one(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    body = {
        "sentAt": "2024-05-01T10:00:00.000Z",
        "batch": [
            {**TRACK, "type": "track"},
            {**TRACK, "type": "track", "sentAt": "2024-05-01T09:00:00.000Z"},
        ],
    }
    client.post("/v1/batch", json=body, headers=_auth(write_key))
    sent = [record["event"]["sentAt"] for record in spooled(settings)]
    assert sent == ["2024-05-01T10:00:00.000Z", "2024-05-01T09:00:00.000Z"]


def test_sentat_header_used_when_neither_event_nor_batch_has_one(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    headers = {**_auth(write_key), "SentAt": "2024-05-01T10:00:00.000Z"}
    client.post(
        "/v1/track",
        json={**TRACK, "originalTimestamp": "2024-05-01T09:59:00.000Z"},
        headers=headers,
    )
    event = spooled(settings)[0]["event"]
    assert event["sentAt"] == "2024-05-01T10:00:00.000Z"


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    settings: Settings, write_key: str, client: TestClient
) -> None:
    """http-api.md: request_ip is the first X-Forwarded-For entry from a trusted proxy only."""
    headers = {**_auth(write_key), "X-Forwarded-For": "198.51.100.1, 10.0.0.1"}
    client.post("/v1/track", json=TRACK, headers=headers)
    assert spooled(settings)[0]["event"]["request_ip"] == "203.0.113.7"  # peer not trusted


def test_forwarded_for_from_trusted_proxy(settings: Settings) -> None:
    with app_client(settings, peer="127.0.0.1") as trusted:
        headers = {
            **_auth(default_key(trusted)),
            "X-Forwarded-For": "198.51.100.1, 10.0.0.1",
        }
        trusted.post("/v1/track", json=TRACK, headers=headers)
        assert spooled(settings)[0]["event"]["request_ip"] == "198.51.100.1"


# -- gzip ----------------------------------------------------------------------------------------


def test_gzip_body_is_decoded(client: TestClient, write_key: str, settings: Settings) -> None:
    headers = {**_auth(write_key), "Content-Encoding": "gzip"}
    response = client.post("/v1/track", content=gzip.compress(orjson.dumps(TRACK)), headers=headers)
    assert response.status_code == 200
    assert spooled(settings)[0]["event"]["event"] == "Signed Up"


def test_corrupt_gzip_is_invalid_json(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    headers = {**_auth(write_key), "Content-Encoding": "gzip"}
    response = client.post("/v1/track", content=b"\x1f\x8bnot gzip at all", headers=headers)
    assert response.status_code == 400
    assert response.text.startswith("Invalid JSON")
    assert spooled(settings) == []


def test_gzip_bomb_is_refused_without_inflating_it(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    """A ~10 KB gzip that inflates to 10 MB: refused as too large, never inflated whole."""
    bomb = gzip.compress(b'{"batch": [' + b" " * (10 * 1024 * 1024) + b"]}", compresslevel=9)
    assert len(bomb) < 20_000
    headers = {**_auth(write_key), "Content-Encoding": "gzip"}
    response = client.post("/v1/batch", content=bomb, headers=headers)
    assert response.status_code == 400
    assert response.text.startswith("Request size too large")
    assert spooled(settings) == []


def test_body_at_exactly_the_limit_is_read(client: TestClient, write_key: str) -> None:
    """4,096,000 bytes is accepted by the reader (the events inside decide the rest)."""
    event = {**TRACK, "type": "track", "properties": {"x": "a" * 30_000}}
    batch = {"batch": [event] * 130}
    body = orjson.dumps(batch)
    body = body[:-1] + b" " * (MAX_REQUEST_BYTES - len(body)) + b"}"
    assert len(body) == MAX_REQUEST_BYTES
    response = client.post("/v1/batch", content=body, headers=_auth(write_key))
    assert response.status_code == 200


# -- beacon, CORS, methods, health ----------------------------------------------------------


def test_beacon_takes_the_key_from_the_query(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    body = orjson.dumps({"batch": [{**TRACK, "type": "track"}]})
    response = client.post(
        f"/beacon/v1/batch?writeKey={write_key}",
        content=body,
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    assert len(spooled(settings)) == 1
    missing = client.post("/beacon/v1/batch", content=body)
    assert missing.status_code == 400
    assert missing.text.startswith("Missing Authorization Header")


def test_cors_preflight_is_204_and_echoes(client: TestClient) -> None:
    response = client.options(
        "/v1/track",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, anonymousid, content-type, sentat",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert response.headers["access-control-allow-methods"] == "POST"
    assert response.headers["access-control-allow-headers"] == (
        "authorization, anonymousid, content-type, sentat"
    )
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-max-age"] == "900"


def test_cors_headers_on_actual_requests_including_errors(
    client: TestClient, write_key: str
) -> None:
    origin = {"Origin": "https://shop.example"}
    for headers in ({**_auth(write_key), **origin}, origin):
        response = client.post("/v1/track", json=TRACK, headers=headers)
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in response.headers["vary"]


def test_wrong_method_is_405_with_allow_and_unknown_path_404(client: TestClient) -> None:
    response = client.get("/v1/track")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert client.post("/v2/track").status_code == 404
    assert client.options("/v1/track").status_code == 405  # no preflight header: the router


def test_health_and_version(client: TestClient) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["spool"]["writable"] is True
    version = client.get("/version").json()
    assert version["version"]


def test_backlog_over_its_bound_answers_503_with_retry_after(tmp_path: Any) -> None:
    settings = Settings(
        database=tmp_path / "w.duckdb",
        spool_dir=tmp_path / "spool",
        backlog_max_bytes=-1,
        loader_in_thread=True,
    )
    with app_client(settings) as limited:
        response = limited.post("/v1/track", json=TRACK, headers=_auth(default_key(limited)))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert spooled(settings) == []
