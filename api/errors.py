"""LoaderError -> HTTP status and plain-text message: the only status-code mapping."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from loader.errors import LoaderError, RequestRejected, TransientError, Unavailable

logger = logging.getLogger(__name__)

STATUS: dict[type[LoaderError], int] = {
    RequestRejected: 400,  # the seed's contract: every rejection is a 400
    Unavailable: 503,
    TransientError: 503,
}


async def handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoaderError), "registered for LoaderError only"
    status = next((STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS), 500)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if status >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    elif logger.isEnabledFor(logging.DEBUG):  # request.url is built even when nothing logs
        logger.debug("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return PlainTextResponse(str(exc).splitlines()[0] + "\n", status, headers=headers)
