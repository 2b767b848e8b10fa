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
    """Starlette's exception handler for LoaderError (app.create_app registers it)."""
    assert isinstance(exc, LoaderError), "registered for LoaderError only"
    return response(exc, request.method, request.scope["path"])


def response(exc: LoaderError, method: str, path: str) -> Response:
    """The answer to a request that failed with `exc`; 5xx are logged with the request."""
    status = next((STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS), 500)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if status >= 500:
        logger.warning("%s %s -> %d: %s", method, path, status, exc)
    else:
        logger.debug("%s %s -> %d: %s", method, path, status, exc)
    return PlainTextResponse(str(exc).splitlines()[0] + "\n", status, headers=headers)
