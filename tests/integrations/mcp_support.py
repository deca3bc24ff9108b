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
    proc, port_file = _spawn(tmp_path, log, port, env)
    return proc, _listening(proc, port_file)


def _spawn(
    tmp_path: Path, log: Path, port: int | None, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, str(SHOP), "http", str(port_file), *([str(port)] if port else [])],
        env={**os.environ, "SHOP_LOG": str(log), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port_file


def _listening(proc: subprocess.Popen[bytes], port_file: Path) -> str:
    """The server's URL once it accepts connections."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the shop server exited with {proc.returncode}")
        if port_file.exists():
            port = int(port_file.read_text())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}/mcp"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the shop server did not start listening")


class HeldShop:
    """A shop server started over HTTP on `port` that has done its slow part (starting
    Python, importing the SDK) and listens only when `listen` says so: a restart that is
    quick whatever the machine's load, for tests whose subject is what happens while the
    server is down, not how long a process takes to start."""

    def __init__(self, tmp_path: Path, log: Path, port: int) -> None:
        self.hold = tmp_path / f"hold-{time.monotonic_ns()}"
        self.proc, self.port_file = _spawn(tmp_path, log, port, {"SHOP_HOLD": str(self.hold)})
        ready = Path(f"{self.hold}.ready")
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the held shop server did not get ready")
            time.sleep(0.05)

    def listen(self) -> str:
        """Let it listen; returns its URL once it accepts connections."""
        self.hold.touch()
        return _listening(self.proc, self.port_file)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def http_shop(tmp_path: Path, shop_log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc, url = start_http_shop(tmp_path, shop_log)
    yield proc, url
    proc.kill()
    proc.wait(timeout=10)
