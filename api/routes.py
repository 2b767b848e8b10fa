"""The endpoints. Ingest: authenticate, read, validate, enrich, spool, answer."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api import openapi
from api.auth import authenticate
from api.body import read_body
from loader import __version__, faults
from loader.enrich import client_ip, enrich
from loader.gateway import Gateway
from loader.spec import parse_request
from loader.types import CallType

logger = logging.getLogger(__name__)

_ACCEPTED = ((b"content-length", b"2"), (b"content-type", b"text/plain; charset=utf-8"))
_HEADERS = frozenset(
    (b"authorization", b"content-length", b"content-encoding", b"x-forwarded-for", b"sentat")
)
"""The request headers the ingest endpoints read."""
CLIENT_CLOSED_REQUEST = 499
"""The status counted (never sent) for a request whose client left mid-body, as nginx logs it."""


class Ingest:
    """A single call (`call_type`) or a batch (None) as a plain ASGI app.

    The ingest routes are the hot path: app.IngestFirst sends their POSTs here ahead of the
    router, and they read the few headers they need from the scope in one pass instead of
    building a Request (about a quarter of a single call's CPU went to Starlette's layers).
    """

    def __init__(self, gateway: Gateway, call_type: CallType | None, beacon: bool = False) -> None:
        self.gateway, self.call_type, self.beacon = gateway, call_type, beacon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A LoaderError is answered by IngestFirst, from api/errors.py's table."""
        try:
            await self._accept(scope, receive)
        except ClientDisconnect:
            # The client hung up before its whole body came: nothing was stored and nobody is
            # left to answer. A flaky mobile network does this often: no traceback, a metric.
            logger.debug(
                "%s %s: the client left before its body arrived", scope["method"], scope["path"]
            )
            self.gateway.metrics.request(scope["path"], CLIENT_CLOSED_REQUEST)
            return
        # New messages and headers each time: middleware may change them on the way.
        await send({"type": "http.response.start", "status": 200, "headers": [*_ACCEPTED]})
        await send({"type": "http.response.body", "body": b"OK"})

    async def _accept(self, scope: Scope, receive: Receive) -> None:
        """Authenticate, read, validate, enrich and spool the request."""
        gateway = self.gateway
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _HEADERS and name not in found:  # the first one wins, as Headers.get
                found[name] = value
        beacon_key = None
        if self.beacon:
            beacon_key = QueryParams(scope["query_string"]).get("writeKey", "")
        source = authenticate(gateway.registry, _text(found, b"authorization"), beacon_key)
        encoding = found.get(b"content-encoding", b"")
        body = await read_body(
            receive,
            declared=_text(found, b"content-length"),
            gzipped=encoding.strip().lower() == b"gzip",
            timeout=gateway.settings.body_timeout,
        )
        faults.point("request")
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = _text(found, b"x-forwarded-for")
        ip = client_ip(peer, forwarded, gateway.settings.trusted_proxies)
        sent_at = _text(found, b"sentat")
        lines, events = _encode(body, self.call_type, source.name, ip, sent_at)
        del body  # only the encoded lines wait for the fsync
        await gateway.batcher.submit(lines, events)
        faults.point("acknowledge")
        gateway.metrics.accepted(source.name, events)


def _text(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


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
