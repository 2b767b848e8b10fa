"""Fixtures: settings in tmp_path, an in-process client, and a real server process."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from api import admin
from api.app import create_app
from loader.gateway import Gateway
from loader.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "cases"


def load_case(name: str) -> Any:
    return orjson.loads((CASES / f"{name}.json").read_bytes())


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database=tmp_path / "warehouse.duckdb",
        spool_dir=tmp_path / "spool",
        segment_max_age=3600.0,  # segments stay open (visible to spooled()) until flush/stop
        loader_in_thread=True,  # the same loader code, without a process start per test
    )


def app_client(settings: Settings, peer: str = "203.0.113.7") -> TestClient:
    """The app with its lifespan (gateway, loader and admin endpoint), in process."""
    gateway = Gateway(settings, admin=admin.start_in_thread)
    return TestClient(create_app(gateway), client=(peer, 5000))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as test_client:
        yield test_client


def default_key(client: TestClient) -> str:
    gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]
    assert gateway.created_default is not None
    return gateway.created_default.write_key


@pytest.fixture
def write_key(client: TestClient) -> str:
    return default_key(client)


def spooled(settings: Settings) -> list[dict[str, Any]]:
    """Every spooled line (open and sealed), as {"source", "event"} records, in order."""
    records = []
    for folder in ("sealed", "open"):
        for path in sorted((settings.spool_dir / folder).glob("*.jsonl")):
            records += [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    return records


def cli(
    settings: Settings, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m api ARGS` on the test's warehouse; `env` adds variables (crash points...)."""
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        env={
            **os.environ,
            "LOADER_DATABASE": str(settings.database),
            "LOADER_SPOOL_DIR": str(settings.spool_dir),
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Read the warehouse once no server holds it (the server is its only writer)."""
    with duckdb.connect(str(settings.database), read_only=True) as con:
        return con.execute(sql).fetchall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real `loader serve` process on a free 127.0.0.1 port."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            "LOADER_DATABASE": str(settings.database),
            "LOADER_SPOOL_DIR": str(settings.spool_dir),
            "LOADER_PORT": str(self.port),
            "LOADER_SEGMENT_MAX_AGE": str(settings.segment_max_age),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.write_key: str | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")
        if self.write_key is None:
            assert self.process.stdout is not None
            os.set_blocking(self.process.stdout.fileno(), False)
            out = (self.process.stdout.read() or b"").decode()
            self.write_key = out.strip().splitlines()[-1] if out.strip() else None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    running = Server(settings, tmp_path / "server.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
