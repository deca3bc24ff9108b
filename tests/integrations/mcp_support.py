"""Real MCP servers for the integration tests: the shop server (shop_server.py beside
this file) as a stdio child process or over streamable HTTP on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SHOP = HERE / "shop_server.py"


@pytest.fixture
def shop_log(tmp_path: Path) -> Path:
    return tmp_path / "shop.log"


def start_http_shop(
    tmp_path: Path, log: Path, port: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the shop server over streamable HTTP; returns the process and its URL."""
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, str(SHOP), "http", str(port_file), *([str(port)] if port else [])],
        env={**os.environ, "SHOP_LOG": str(log), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the shop server exited with {proc.returncode}")
        if port_file.exists():
            port = int(port_file.read_text())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc, f"http://127.0.0.1:{port}/mcp"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the shop server did not start listening")


@pytest.fixture
def http_shop(tmp_path: Path, shop_log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc, url = start_http_shop(tmp_path, shop_log)
    yield proc, url
    proc.kill()
    proc.wait(timeout=10)
