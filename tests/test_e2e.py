"""End to end through a real `loader serve` process on a free 127.0.0.1 port and the CLI."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from loader.pipeline import Pipeline
from loader.settings import Settings
from tests.conftest import Server, basic, cli, load_case, query, spooled

pytestmark = pytest.mark.slow


def test_every_call_type_is_spooled_exactly_as_enriched(server: Server) -> None:
    """Issue 2: a batch with every call type is accepted and spooled with the enrichment."""
    body = load_case("batch.seed")
    body["batch"].append(
        {
            "type": "merge",
            "userId": "user123",
            "mergeProperties": [
                {"type": "email", "value": "alex@example.com"},
                {"type": "phone", "value": "+1-202"},
            ],
        }
    )
    assert server.write_key
    response = httpx.post(server.url + "/v1/batch", json=body, headers=basic(server.write_key))
    assert response.status_code == 200, response.text
    records = spooled(server.settings)
    assert [r["event"]["type"] for r in records] == [e["type"] for e in body["batch"]]
    for sent, record in zip(body["batch"], records, strict=True):
        event = record["event"]
        assert record["source"] == "default"
        for key, value in sent.items():
            assert event[key] == value, key  # the seed's timestamps are already canonical
        if "timestamp" not in sent:
            assert event["timestamp"] == event["receivedAt"]
        assert event["request_ip"] == "127.0.0.1"
        assert uuid.UUID(event["messageId"]).version == 4
        assert event["sentAt"] == event["originalTimestamp"] == event["receivedAt"]


def test_request_ip_is_the_first_forwarded_for_entry_through_uvicorn(server: Server) -> None:
    """http-api.md "What the server adds": from a trusted proxy (127.0.0.1 here), request_ip is
    the first X-Forwarded-For entry. uvicorn must not rewrite the peer from that header first:
    its own rule (the last untrusted entry) would give 10.0.0.1."""
    assert server.write_key
    headers = {**basic(server.write_key), "X-Forwarded-For": "198.51.100.1, 10.0.0.1"}
    event = {"userId": "u1", "event": "Signed Up"}
    response = httpx.post(server.url + "/v1/track", json=event, headers=headers)
    assert response.status_code == 200, response.text
    assert [r["event"]["request_ip"] for r in spooled(server.settings)] == ["198.51.100.1"]


def test_a_client_leaving_mid_body_stores_nothing_and_logs_no_traceback(server: Server) -> None:
    """Bad input changes nothing: a body cut short by the client's hang-up is not spooled,
    the log has no traceback for it, and /metrics counts it as 499 (client closed request)."""
    assert server.write_key
    auth = base64.b64encode(f"{server.write_key}:".encode()).decode()
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"userId": "u1", "event": "Sig')
    metric = 'loader_http_requests_total{endpoint="/v1/track",status="499"} 1.0'
    deadline = time.monotonic() + 10
    while metric not in (text := httpx.get(server.url + "/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    ok = httpx.post(
        server.url + "/v1/track",
        json={"userId": "u2", "event": "Signed Up"},
        headers=basic(server.write_key),
    )
    assert ok.status_code == 200
    assert [r["event"]["userId"] for r in spooled(server.settings)] == ["u2"]
    assert "Traceback" not in server.log.read_text()


def test_posted_events_are_queryable_after_flush_in_their_namespaces(server: Server) -> None:
    """Issue 3: HTTP -> spool -> `loader flush` (via the admin channel) -> tables per source."""
    settings = server.settings
    web = cli(settings, "sources", "add", "Web Shop")
    assert web.returncode == 0, web.stderr
    web_key = web.stdout.strip()
    assert server.write_key
    track = {"userId": "u1", "event": "Order Completed", "properties": {"total": 12.5}}
    for key in (server.write_key, web_key):
        response = httpx.post(server.url + "/v1/track", json=track, headers=basic(key))
        assert response.status_code == 200
    httpx.post(
        server.url + "/v1/identify",
        headers=basic(web_key),
        json={"userId": "u1", "traits": {"email": "a@b.c"}},
    )
    flushed = cli(settings, "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert "Loaded 3 events" in flushed.stdout
    status = cli(settings, "status", "--format", "json")
    rows = orjson.loads(status.stdout)["rows"]
    assert rows["main.tracks"] == 1 and rows["web_shop.order_completed"] == 1
    server.stop()
    assert query(settings, "select event, event_text from main.tracks") == [
        ("order_completed", "Order Completed")
    ]
    assert query(settings, "select total from web_shop.order_completed") == [(12.5,)]
    assert query(settings, "select id, email from web_shop.users") == [("u1", "a@b.c")]


def _send_until_killed(url: str, key: str, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            batch = [
                {
                    "type": "track",
                    "userId": "u",
                    "event": "Tick",
                    "messageId": str(uuid.uuid4()),
                    "properties": {"n": i},
                }
                for i in range(5)
            ]
            try:
                response = client.post(url + "/v1/batch", json={"batch": batch}, headers=basic(key))
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acked.extend(event["messageId"] for event in batch)


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Issue 2 and 3: 16 connections send, the server gets SIGKILL mid-stream and restarts.

    Every event that got a 200 is in the spool exactly once; after the restart loads it, the
    tables hold exactly the acknowledged messageIds, once each.
    """
    settings = Settings(
        database=tmp_path / "w.duckdb", spool_dir=tmp_path / "spool", segment_max_age=0.2
    )
    server = Server(settings, tmp_path / "server.log", LOADER_SEGMENT_MAX_EVENTS="500")
    server.start()
    assert server.write_key
    acked: list[str] = []
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [
            pool.submit(_send_until_killed, server.url, server.write_key, acked, stop)
            for _ in range(16)
        ]
        deadline = time.monotonic() + 30
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        stop.set()
        concurrent.futures.wait(futures, timeout=30)
    assert len(acked) >= 2000
    assert len(set(acked)) == len(acked)

    server.start()  # recovery: seal open/, cut a torn tail, load everything
    flushed = cli(settings, "flush")
    assert flushed.returncode == 0, flushed.stderr
    server.stop()
    loaded = [row[0] for row in query(settings, "select id from main.tick")]
    assert len(loaded) == len(set(loaded)), "an event was loaded twice"
    assert set(acked) <= set(loaded), "an acknowledged event was lost"
    tracks = query(settings, "select count(*), count(distinct id) from main.tracks")[0]
    assert tracks[0] == tracks[1] == len(loaded)


def test_duckdb_memory_limit_is_applied_and_a_bad_one_is_named(settings: Settings) -> None:
    """DuckDB's cache is bounded (it otherwise grows with the warehouse); a value that is not a
    size stops the command with a message naming it."""
    pipeline = Pipeline(dataclasses.replace(settings, duckdb_memory_limit="256MB"))
    pipeline.open(create_default=True)
    try:
        [(limit,)] = pipeline.con.execute("SELECT current_setting('memory_limit')").fetchall()
    finally:
        pipeline.close()
    assert limit == "244.1 MiB"  # DuckDB shows 256 MB in MiB

    failed = cli(settings, "status", LOADER_DUCKDB_MEMORY_LIMIT="lots")
    assert failed.returncode != 0
    assert "LOADER_DUCKDB_MEMORY_LIMIT='lots' is not a memory size" in failed.stderr
    assert "Traceback" not in failed.stderr
