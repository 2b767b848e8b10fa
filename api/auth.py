"""Write key (HTTP Basic username, or the beacon's ?writeKey=) -> source."""

from __future__ import annotations

import base64
import binascii

from loader.errors import Unauthorized
from loader.sources import Registry, Source


def authenticate(registry: Registry, header: str | None, beacon_key: str | None = None) -> Source:
    """The enabled source the request's write key belongs to. Never logs the key.

    `header` is the Authorization header; a beacon request passes `beacon_key`, its
    `?writeKey=` ("" when it has none), and its header is not read.
    """
    if beacon_key is not None:
        if not beacon_key:
            raise Unauthorized("Missing Authorization Header: add ?writeKey=<your write key>")
        key = beacon_key
    elif header is None:
        raise Unauthorized(
            "Missing Authorization Header: send HTTP Basic auth with your write key as the "
            "username and an empty password"
        )
    else:
        key = _basic_username(header)
    source = registry.lookup(key)
    if source is None:
        raise Unauthorized(
            "Invalid Authorization Header: no enabled source has this write key "
            "(see `loader sources list`)"
        )
    return source


def _basic_username(header: str) -> str:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Unauthorized("Invalid Authorization Header: expected `Basic <base64 of key:>`")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized(
            "Invalid Authorization Header: the credentials are not valid base64 of UTF-8 text"
        ) from None
    key = decoded.split(":", 1)[0]  # no colon: the whole value is the key, as Segment allows
    if not key:
        raise Unauthorized("Invalid Authorization Header: the write key (username) is empty")
    return key
