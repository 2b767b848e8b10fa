"""The OpenAPI document of the public API, served at /openapi.json (spec/http-api.md)."""

from __future__ import annotations

from typing import Any

from loader import __version__
from loader.types import CALL_TYPES

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_JSON_BODY = {
    "application/json": {"schema": {"type": "object"}},
    "text/plain": {"schema": {"type": "string"}},
}
_REJECTED = {
    "description": "Rejected: a one-line message starting with one of the phrases of the "
    "contract (Missing Authorization Header, Invalid Authorization Header, "
    "Request size too large, Invalid JSON, Invalid event, Empty batch payload, "
    "Invalid event type, Request neither has anonymousId nor userId, Missing "
    "required field, Request timeout). Nothing of the request is stored.",
    "content": _TEXT,
}
_INGEST_RESPONSES = {
    "200": {"description": "OK: every event is durable (fsynced).", "content": _TEXT},
    "400": _REJECTED,
    "503": {
        "description": "The spool cannot accept events now; retry after Retry-After.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": _TEXT,
    },
}


def _ingest(summary: str, basic: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": _JSON_BODY},
        "responses": _INGEST_RESPONSES,
    }
    if basic:
        operation["security"] = [{"writeKey": []}]
    else:
        operation["parameters"] = [
            {"name": "writeKey", "in": "query", "required": True, "schema": {"type": "string"}}
        ]
    return operation


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        f"/v1/{call}": {"post": _ingest(f"One {call} call; the path sets `type`.")}
        for call in sorted(CALL_TYPES)
    }
    paths["/v1/batch"] = {"post": _ingest('{"batch": [event, ...]}, all or nothing.')}
    paths["/beacon/v1/batch"] = {"post": _ingest("The browser SDK's beacon batch.", False)}
    json_ok = {"content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/health"] = {
        "get": {
            "summary": "Liveness and readiness.",
            "responses": {
                "200": {"description": "Accepting events.", **json_ok},
                "503": {
                    "description": "Degraded: the spool refuses events or the loader is down.",
                    **json_ok,
                },
            },
        }
    }
    paths["/version"] = {
        "get": {
            "summary": "Version and commit.",
            "responses": {"200": {"description": "Version.", **json_ok}},
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics.",
            "responses": {"200": {"description": "Prometheus text format.", "content": _TEXT}},
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1.", **json_ok}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Event warehouse HTTP API",
            "version": __version__,
            "description": "RudderStack/Segment-compatible event collection.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The source's write key as the username, an empty password.",
                }
            }
        },
    }
