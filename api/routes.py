"""One small async function per endpoint: authenticate, read, validate, enrich, spool, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api import openapi
from api.auth import authenticate
from api.body import read_body
from loader import __version__, faults
from loader.enrich import client_ip, enrich
from loader.gateway import Gateway
from loader.spec import parse_request
from loader.types import CallType

ACCEPTED = PlainTextResponse("OK")

Endpoint = Callable[[Request], Awaitable[Response]]


def ingest(call_type: CallType | None, beacon: bool = False) -> Endpoint:
    """The endpoint for a single call (`call_type`) or a batch (None)."""

    async def endpoint(request: Request) -> Response:
        gateway: Gateway = request.app.state.gateway
        headers = request.headers
        source = authenticate(gateway.registry, headers, request.query_params if beacon else None)
        body = await read_body(request, timeout=gateway.settings.body_timeout)
        faults.point("request")
        peer = request.client.host if request.client else None
        ip = client_ip(peer, headers.get("x-forwarded-for"), gateway.settings.trusted_proxies)
        lines, events = _encode(body, call_type, source.name, ip, headers.get("sentat"))
        del body  # only the encoded lines wait for the fsync
        await gateway.batcher.submit(lines, events)
        faults.point("acknowledge")
        gateway.metrics.accepted(source.name, events)
        return ACCEPTED

    return endpoint


def _encode(
    body: bytes, call_type: CallType | None, source: str, ip: str, sent_at_header: str | None
) -> tuple[bytes, int]:
    """Validate and enrich the request's events; their spool lines and count.

    A function of its own so that the parsed events are freed as it returns: the request
    then waits for the fsync holding bytes only, which the garbage collector never walks.
    """
    payload = parse_request(body, call_type)
    received_at = datetime.now(UTC)
    sent_at = payload.sent_at or sent_at_header
    # The line is orjson.dumps({"source": source, "event": event}) + b"\n", built from a
    # prefix encoded once per request instead of an envelope dict per event.
    prefix = _envelope_prefix(source)
    dumps = orjson.dumps
    parts: list[bytes] = []
    for event in payload.events:
        enrich(event, received_at=received_at, request_ip=ip, sent_at=sent_at)
        parts += (prefix, dumps(event), b"}\n")
    return b"".join(parts), len(payload.events)


@lru_cache(maxsize=64)
def _envelope_prefix(source: str) -> bytes:
    return b'{"source":' + orjson.dumps(source) + b',"event":'


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    refused = gateway.batcher.refusal()
    backlog = gateway.batcher.backlog
    body: dict[str, Any] = {
        "status": "ok" if refused is None else "degraded",
        "spool": {
            "writable": refused is None,
            "reason": None if refused is None else refused.reason,
            "backlog_segments": backlog.segments,
            "backlog_bytes": backlog.bytes,
            "oldest_age_seconds": round(backlog.oldest_age, 3),
            "failed_segments": backlog.failed,
        },
        "loader": {"running": gateway.loader.alive},
        "version": __version__,
    }
    healthy = refused is None and gateway.loader.alive
    body["status"] = "ok" if healthy else "degraded"
    return JSONResponse(body, status_code=200 if healthy else 503)


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


_OPENAPI = JSONResponse(openapi.document())


async def openapi_json(request: Request) -> Response:
    return _OPENAPI


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__, "commit": request.app.state.commit})
