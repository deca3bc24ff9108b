"""Test hosts on one machine: network namespaces on a virtual LAN, a TCP forwarder that
makes a loopback-only PostgreSQL reachable from them, and a private PostgreSQL server the
tests may restart.

    with Lan(hosts=3) as lan:                    # namespaces tlh-<run>-0..2 on a bridge
        fwd = Forwarder(lan.gateway, 5432, "127.0.0.1", 5432).start()
        proc = lan.popen(0, [sys.executable, "-m", "threadline", "worker", ...])
        lan.cut(0); ...; lan.restore(0)          # `ip link set <port> down/up`
        fwd.stop()

Every host is a namespace with its own address (10.x.y.2, .3, ...) on a bridge in the root
namespace whose address (10.x.y.1) is the gateway. Only that gateway and the hosts' own
addresses carry traffic: the namespaces have no route anywhere else. Cutting a host sets its
bridge port down (the cable pulled at the switch): its TCP connections stall, they are not
reset, so whatever it sent or was about to send arrives when the link comes back.

Needs root and iproute2's `ip`; `require_netns()` fails (CI=true) or skips with the reason.
Everything is removed on exit, also when the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Forwarder", "Lan", "PrivatePostgres", "require_netns", "wait_until"]


def require_netns() -> None:
    """Fail under CI=true, else skip, unless namespaces can be made (root and `ip`)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_NET_ADMIN)")
    if shutil.which("ip") is None:
        missing.append("iproute2's `ip` command")
    if not missing:
        return
    reason = "the many-hosts tests need " + " and ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run)")
    pytest.skip(reason)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-254.x.0 that no route of this machine uses."""
    routes = _ip("-4", "route", "show", "table", "all").stdout
    used = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(first if "/" in first else f"{first}/32", False))
    rng = random.Random()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(200, 255)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4):
            return net  # type: ignore[return-value]
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test hosts")


class Lan:
    """`hosts` network namespaces, each with a veth into one bridge (see the module doc)."""

    def __init__(self, hosts: int) -> None:
        self.run = os.urandom(2).hex()
        self.count = hosts
        self.bridge = f"tlb{self.run}"
        self.names = [f"tlh-{self.run}-{i}" for i in range(hosts)]
        self.ports = [f"tlp{self.run}{i}" for i in range(hosts)]
        self.net = _free_subnet()
        hosts_ = list(self.net.hosts())
        self.gateway = str(hosts_[0])
        self.addresses = [str(h) for h in hosts_[1 : hosts + 1]]
        self._made: list[tuple[str, ...]] = []

    def __enter__(self) -> Lan:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        prefix = self.net.prefixlen
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", "del", self.bridge))
        _ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name, port, address in zip(self.names, self.ports, self.addresses, strict=True):
            _ip("netns", "add", name)
            self._made.append(("netns", "del", name))
            _ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
            self._made.append(("link", "del", port))
            _ip("link", "set", port, "master", self.bridge, "up")
            _ip("-n", name, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        """Remove every link and namespace made (idempotent; never raises)."""
        for args in reversed(self._made):
            with contextlib.suppress(Exception):
                _ip(*args, check=False)
        self._made.clear()

    def popen(self, host: int, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `argv` on host `host` (`ip netns exec` execs it: the pid is the program's)."""
        return subprocess.Popen(["ip", "netns", "exec", self.names[host], *argv], **kwargs)

    def cut(self, host: int) -> None:
        _ip("link", "set", self.ports[host], "down")

    def restore(self, host: int) -> None:
        _ip("link", "set", self.ports[host], "up")


class Forwarder:
    """A TCP forwarder in the root namespace: `listen_host:listen_port` -> `target`.

    Runs its own event loop in a thread, so a test blocking its loop (sync psycopg) does not
    stall the hosts' traffic. When either side closes or fails, both are closed (a server
    restart reaches the clients as a closed connection, as it would without the forwarder).
    """

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int):
        self.listen = (listen_host, listen_port)
        self.target = (target_host, target_port)
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> Forwarder:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=30)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self.listen, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, 127.0.0.1 and a
    free port, trust auth), so restarting it under load disturbs no other user of the
    machine's server. Run as the `postgres` user with the machine's PostgreSQL binaries."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries (pg_ctl) on this machine")
        self.bin = bins[-1].parent
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tl-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv: str, timeout: float = 120) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout[-500:]} {done.stderr[-500:]}")

    def __enter__(self) -> PrivatePostgres:
        shutil.chown(self.dir, "postgres", "postgres")
        try:
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _ctl(self, action: str) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
            "-o", opts, "-w", "-t", "120", "-m", "fast", action,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(predicate: Any, what: str, seconds: float, every: float = 0.2) -> Any:
    """Poll `predicate()` until it returns something truthy (returned), or fail."""
    end = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(every)
