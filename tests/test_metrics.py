"""/metrics in Prometheus text format (issue: reliability): requests, events, spool, loads."""

from __future__ import annotations

import re
import time

from starlette.testclient import TestClient

from api import admin
from loader.settings import Settings
from tests.conftest import basic


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


def test_metrics_count_requests_events_and_loads(
    client: TestClient, write_key: str, settings: Settings
) -> None:
    headers = basic(write_key)
    for _ in range(3):
        client.post("/v1/track", json={"userId": "u", "event": "Paid"}, headers=headers)
    client.post("/v1/track", json={"event": "no ids"}, headers=headers)
    client.get("/wp-admin.php")
    admin.call(settings, "flush", {})
    deadline = time.monotonic() + 10  # the load report crosses from the loader thread
    text = client.get("/metrics").text
    while "loader_events_loaded_total 3.0" not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        text = client.get("/metrics").text
    assert _value(text, "loader_http_requests_total", 'endpoint="/v1/track",status="200"') == 3
    assert _value(text, "loader_http_requests_total", 'endpoint="/v1/track",status="400"') == 1
    assert _value(text, "loader_http_requests_total", 'endpoint="other",status="404"') == 1
    assert _value(text, "loader_events_accepted_total", 'source="default"') == 3
    assert _value(text, "loader_events_loaded_total") == 3
    assert _value(text, "loader_rows_loaded_total", 'table="main.tracks"') == 3
    assert _value(text, "loader_rows_loaded_total", 'table="main.paid"') == 3
    assert _value(text, "loader_load_duration_seconds_count") >= 1
    assert _value(text, "loader_duckdb_memory_bytes") > 0
    assert _value(text, "loader_spool_backlog_segments") == 0
    assert _value(text, "loader_spool_failed_segments") == 0
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
