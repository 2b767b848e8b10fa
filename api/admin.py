"""The local admin channel: how CLI commands reach a running server that owns the warehouse.

The server listens on a second socket, 127.0.0.1 only, on a random port, and writes
`<database>.admin` (owner-only) with that address and a random token. Anything without the token
gets 401. The public app never routes here, so its CORS never applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loader.errors import AdminUnavailable, LoaderError
from loader.pipeline import Pipeline
from loader.settings import Settings

logger = logging.getLogger(__name__)

NOT_RUNNING = object()
"""`call()`'s answer when no server holds the warehouse: run the command locally."""


def admin_file(settings: Settings) -> Path:
    return settings.database.with_name(settings.database.name + ".admin")


def create_admin_app(pipeline: Pipeline, token: str) -> Starlette:
    """POST /admin/{command} with JSON arguments; the answer streams NDJSON lines:
    `{"progress": {...}}` while the command runs, then one `{"result": ...}` or
    `{"error": "...", "kind": "..."}`."""

    async def run(request: Request) -> Response:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "missing or wrong admin token"}, status_code=401)
        name = request.path_params["command"]
        try:
            args = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        return StreamingResponse(_stream(pipeline, name, args), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/admin/{command}", run, methods=["POST"])])


async def _stream(pipeline: Pipeline, name: str, args: dict[str, Any]) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def progress(state: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, {"progress": state})

    def work() -> None:
        try:
            final: dict[str, Any] = {"result": pipeline.command(name, args, progress)}
        except LoaderError as exc:
            final = {"error": str(exc), "kind": type(exc).__name__}
        except Exception as exc:
            logger.exception("Admin command %s failed", name)
            final = {"error": f"{type(exc).__name__}: {exc}", "kind": "InternalError"}
        loop.call_soon_threadsafe(queue.put_nowait, final)

    worker = threading.Thread(target=work, name=f"admin-{name}", daemon=True)
    worker.start()
    while True:
        message = await queue.get()
        yield json.dumps(message, default=str).encode() + b"\n"
        if "progress" not in message:
            return


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the public server owns the signals; this one stops with it


def start_in_thread(pipeline: Pipeline) -> Callable[[], None]:
    """Serve the admin endpoint from a thread of the loader process; returns its stop()."""
    path = admin_file(pipeline.settings)
    token = secrets.token_urlsafe(32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(  # log_config=None: leave the process's logging alone
        create_admin_app(pipeline, token), log_config=None, lifespan="off"
    )
    server = _QuietServer(config)
    thread = threading.Thread(
        target=asyncio.run, args=(server.serve(sockets=[sock]),), name="admin", daemon=True
    )
    thread.start()
    info = {"url": f"http://127.0.0.1:{port}", "token": token, "pid": os.getpid()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(info, file)
    os.chmod(path, 0o600)
    logger.info("Admin endpoint on 127.0.0.1:%d (token in %s)", port, path)

    def stop() -> None:
        path.unlink(missing_ok=True)
        server.should_exit = True
        thread.join(timeout=10)

    return stop


def call(
    settings: Settings,
    command: str,
    args: dict[str, Any],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Run `command` on the server that holds the warehouse; NOT_RUNNING if there is none."""
    path = admin_file(settings)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return NOT_RUNNING
    except (OSError, ValueError) as exc:
        raise AdminUnavailable(f"Cannot read the admin file {path}: {exc}.") from exc
    if not _alive(int(info.get("pid", 0))):
        return NOT_RUNNING  # a server that died without cleaning up
    headers = {"Authorization": f"Bearer {info['token']}"}
    try:
        with httpx.stream(
            "POST",
            f"{info['url']}/admin/{command}",
            json=args,
            headers=headers,
            timeout=httpx.Timeout(30.0, read=None),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise AdminUnavailable(
                    f"The server refused `{command}`: {response.json().get('error')}"
                )
            for line in response.iter_lines():
                message = json.loads(line)
                if "progress" in message:
                    if progress is not None:
                        progress(message["progress"])
                elif "error" in message:
                    raise LoaderError(message["error"])  # the command's own error
                else:
                    return message["result"]
    except httpx.HTTPError as exc:
        raise AdminUnavailable(
            f"A server (pid {info.get('pid')}) holds {settings.database} but its admin endpoint "
            f"{info['url']} did not answer ({exc}). Wait for it to start, or stop it."
        ) from exc
    raise AdminUnavailable(f"The server ended `{command}` without an answer; see its log.")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
