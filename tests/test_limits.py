"""Resource bounds on a real server (issue: reliability): big heads, slow and big bodies,
many connections. Every refusal is a 400 the client actually receives."""

from __future__ import annotations

import base64
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loader.settings import MAX_REQUEST_BYTES, Settings
from tests.conftest import Server, basic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("limits")
    settings = Settings(database=tmp / "w.duckdb", spool_dir=tmp / "spool")
    running = Server(settings, tmp / "server.log", LOADER_BODY_TIMEOUT="2")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _raw(
    server: Server,
    head: bytes,
    body: bytes = b"",
    pause: float = 0.0,
    sent: list[int] | None = None,
) -> bytes:
    """Send a request by hand; returns everything the server answered before closing.
    `sent` (if given) gets the number of body bytes sent before the answer came."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        count = 0
        try:
            sock.sendall(head)
            for byte in body:
                if select.select([sock], [], [], pause)[0]:
                    break  # the server answered before the body was complete
                sock.sendall(bytes([byte]))
                count += 1
        except OSError:
            pass  # the server may answer and close before we are done sending
        if sent is not None:
            sent.append(count)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"\n"):
                break
        return answer


def _head(server: Server, extra: str = "", length: int = 0) -> bytes:
    assert server.write_key
    auth = base64.b64encode(f"{server.write_key}:".encode()).decode()
    return (
        f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n{extra}"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_headers_over_64_kb_get_a_400(server: Server) -> None:
    body = b'{"userId": "u", "event": "e"}'
    ok = _raw(server, _head(server, f"X-Pad: {'a' * 60_000}\r\n", len(body)) + body)
    assert ok.startswith(b"HTTP/1.1 200")
    refused = _raw(server, _head(server, f"X-Pad: {'a' * 70_000}\r\n", len(body)) + body)
    assert refused.startswith(b"HTTP/1.1 400")
    assert b"Request size too large" in refused


def test_body_trickled_slower_than_the_timeout_gets_a_400(server: Server) -> None:
    """A body at 1 byte per 0.3 s with body_timeout=2 s: refused before it is complete (about
    7 of its 40 bytes), and the connection freed."""
    sent: list[int] = []
    answer = _raw(server, _head(server, length=40), b" " * 40, pause=0.3, sent=sent)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Request timeout" in answer
    assert sent[0] < 40, "the server waited for the whole trickled body"


def test_oversized_body_is_answered_not_reset(server: Server) -> None:
    """spec/http-api.md: a client must receive `Request size too large`, not a reset."""
    assert server.write_key
    body = b'{"batch": [' + b" " * (MAX_REQUEST_BYTES + 10) + b"]}"
    response = httpx.post(
        server.url + "/v1/batch", content=body, headers=basic(server.write_key), timeout=30
    )
    assert response.status_code == 400
    assert response.text.startswith("Request size too large")


def test_a_thousand_concurrent_connections_are_served(server: Server, tmp_path: Path) -> None:
    """1,000 connections open at once, each sending one event: every one gets a 200 or a
    clean refusal; the server stays healthy."""
    assert server.write_key
    body = b'{"userId": "u", "event": "Crowd"}'
    request = _head(server, length=len(body)) + body
    answers: list[bytes] = []
    lock = threading.Lock()
    socks = []
    for _ in range(1000):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        socks.append(sock)

    def send(sock: socket.socket) -> None:
        try:
            sock.sendall(request)
            answer = sock.recv(4096)
        except OSError as exc:
            answer = f"error {exc}".encode()
        finally:
            sock.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(s,)) for s in socks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 1000
    statuses = {a.split(b"\r\n", 1)[0] for a in answers}
    assert statuses <= {b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable"}, statuses
    assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) > 0
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
