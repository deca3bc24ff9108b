"""Tools from MCP servers become intents (on the official `mcp` SDK).

    files = MCPServer("files", command=["python", "files_server.py"],
                      approval={"delete_*": "always"})
    agent = Agent("ops", tools=[*my_tools, *mcp_tools(files)])

`mcp_tools` connects at start-up, lists the server's tools and turns each into an ordinary
`Tool` built with `Tool.from_json_schema`: the model is shown the server's schema verbatim,
arguments are validated against it before anything is sent, and the tool is registered as
`name@version` where the version is a hash of its schema and description (a changed remote
tool is a new version; old threads keep naming the old one). Side-effect flags and the
approval policy come from the agent's rules first and the server's hints second (see
`config.py`).

A call goes over a session opened lazily in the running event loop and kept open; a dropped
session is reopened on the next call. What happens when a session drops *during* a call
depends on whether re-sending is safe:

* read-only or idempotent tool: the call is re-sent once on a fresh session;
* any other tool: its outcome is unknown, so it is **never** re-sent. The tool raises
  `ToolOutcomeUnknown`; the runtime records no outcome and the thread escalates with the
  facts (the maybe-ran path: `tool_started` without an outcome).

Results: `structuredContent` when the server gives it, else the text (one block) or a list
of blocks (binary content is described, not inlined); a result with `isError` becomes a
`tool_error` (`RemoteToolError`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ...errors import (
    MissingExtraError,
    RemoteToolError,
    RetryableToolError,
    ToolOutcomeUnknown,
)
from ...tools import Tool, ToolContext
from .config import MCPServer, schema_version

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult

    from ...agent import Agent

__all__ = ["MCPConnection", "MCPTool", "discover", "follow", "mcp_tools", "tool_result_value"]

log = logging.getLogger("threadline.mcp")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_PING_TIMEOUT = 5.0


def _require_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise MissingExtraError("mcp", "mcp") from None


class MCPTool(Tool):
    """A `Tool` whose code runs on an MCP server.

    Attributes:
        server: the `MCPServer` it comes from.
        remote_name: the tool's name on the server (the model may see it prefixed).
        annotations: the server's hints, as sent (wire names).
    """

    server: MCPServer
    remote_name: str
    annotations: dict[str, Any]

    @property
    def remote_pin(self) -> dict[str, str]:
        """What `threadline build` pins in the lock for this tool."""
        blob = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return {
            "server": self.server.name,
            "source": self.server.source,
            "tool": self.remote_name,
            "version": self.version,
            "schema_sha256": hashlib.sha256(blob.encode()).hexdigest(),
        }


def build_tool(server: MCPServer, remote: Any) -> MCPTool | None:
    """An `MCPTool` for one entry of `tools/list`, or None if the agent does not use it."""
    if not server.wants(remote.name):
        return None
    name = server.prefix + remote.name
    if not _NAME.fullmatch(name):
        log.warning("MCP server %s: tool name %r is not usable; skipped", server.name, name)
        return None
    schema: dict[str, Any] = dict(remote.input_schema)
    description = remote.description or ""
    hints = (
        remote.annotations.model_dump(by_alias=True, exclude_none=True)
        if remote.annotations is not None
        else {}
    )
    policy = server.policy(name, hints)
    remote_name = remote.name

    async def call(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return await connection(server).call(
            remote_name,
            arguments,
            side_effects=policy.side_effects,
            idempotent=policy.idempotent,
        )

    made = MCPTool.from_json_schema(
        name,
        schema,
        call,
        version=schema_version(schema, description),
        description=description,
        side_effects=policy.side_effects,
        idempotent=policy.idempotent,
        approval=policy.approval,
        timeout=None,  # the connection applies `server.timeout` and knows what it means
        retry=server.retry,
        breaker=server.breaker,
    )
    if not isinstance(made, MCPTool):  # from_json_schema builds `cls`
        raise TypeError("MCPTool.from_json_schema must build an MCPTool")
    made.server = server
    made.remote_name = remote_name
    made.annotations = hints
    return made


def connection(server: MCPServer) -> MCPConnection:
    """The server's connection in the running event loop (sessions cannot cross loops)."""
    loop = asyncio.get_running_loop()
    conn: MCPConnection | None = server._connections.get(loop)
    if conn is None:
        conn = server._connections[loop] = MCPConnection(server)
        made = conn

        async def changed() -> None:
            await _refresh(server, made)

        conn.on_tools_changed = changed
    return conn


class MCPConnection:
    """One MCP session with one server in one event loop, reopened after it drops.

    A background task owns the transport and the `ClientSession` (their cancel scopes
    must be entered and left by the same task); calls use the session from any task.
    """

    def __init__(self, server: MCPServer) -> None:
        _require_mcp()
        self.server = server
        self.sessions_opened = 0
        self.on_tools_changed: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._session: ClientSession | None = None
        self._holder: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._broken = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def session(self) -> ClientSession:
        """A live session, opening (or reopening) one if needed."""
        async with self._lock:
            if self._session is None or self._broken:
                await self._shut()
                await self._open()
            if self._session is None:  # _open sets it or raises
                raise ConnectionError(f"MCP server {self.server.name}: no session")
            return self._session

    async def aclose(self) -> None:
        async with self._lock:
            await self._shut()

    async def _open(self) -> None:
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._broken = False
        self._holder = asyncio.create_task(self._hold(ready, self._stop))
        try:
            async with asyncio.timeout(self.server.connect_timeout):
                self._session = await asyncio.shield(ready)
        except BaseException:
            await self._shut()
            raise
        self.sessions_opened += 1

    async def _shut(self) -> None:
        holder, self._holder, self._session = self._holder, None, None
        if holder is None:
            return
        self._stop.set()
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(holder)
        except (TimeoutError, Exception):
            holder.cancel()
            with contextlib.suppress(BaseException):
                await holder

    async def _hold(self, ready: asyncio.Future[ClientSession], stop: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                await session.initialize()
                if not ready.done():
                    ready.set_result(session)
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.info("MCP server %s: session ended: %s", self.server.name, exc)
        finally:
            self._broken = True
            if not ready.done():
                ready.set_exception(ConnectionError(f"MCP server {self.server.name} closed"))

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        if self.server.command:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=self.server.command[0],
                args=list(self.server.command[1:]),
                env=self.server.child_env() or None,
                cwd=self.server.cwd,
            )
            async with stdio_client(params) as (read, write):
                yield read, write
            return
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        url = str(self.server.url)
        async with (
            httpx2.AsyncClient(
                headers=self.server.http_headers(),
                timeout=httpx2.Timeout(self.server.connect_timeout, read=None),
            ) as http,
            streamable_http_client(url, http_client=http) as (read, write),
        ):
            yield read, write

    async def _on_message(self, message: Any) -> None:
        from mcp.types import ToolListChangedNotification

        if isinstance(message, Exception):
            self._broken = True
        elif isinstance(message, ToolListChangedNotification) and self.on_tools_changed:
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                self.on_tools_changed()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def list_tools(self) -> list[Any]:
        """Every tool the server lists (following pagination)."""
        from mcp.types import PaginatedRequestParams

        session = await self.session()
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(
        self, name: str, arguments: dict[str, Any], *, side_effects: bool, idempotent: bool
    ) -> Any:
        """Call tool `name`; returns its result value or raises (see the module docstring)."""
        risky = side_effects and not idempotent
        session = await self._reach(check=risky)
        try:
            result = await session.call_tool(
                name, arguments, read_timeout_seconds=self.server.timeout
            )
        except Exception as exc:
            verdict = _classify(exc)
            if verdict == "failed":
                raise RemoteToolError(f"{self.server.name}.{name}: {_text(exc)}") from None
            self._broken = True
            if verdict == "unknown" and risky:
                raise ToolOutcomeUnknown(
                    f"the session with MCP server {self.server.name} ended during "
                    f"{name} ({_text(exc)}); it may or may not have run"
                ) from None
            session = await self._reach(check=False)
            try:  # safe to send again: not processed, or read-only / idempotent
                result = await session.call_tool(
                    name, arguments, read_timeout_seconds=self.server.timeout
                )
            except Exception as again:
                if _classify(again) == "failed":
                    raise RemoteToolError(f"{self.server.name}.{name}: {_text(again)}") from None
                self._broken = True
                raise RetryableToolError(
                    f"MCP server {self.server.name} did not answer {name}: {_text(again)}"
                ) from None
        return tool_result_value(result, f"{self.server.name}.{name}")

    async def _reach(self, *, check: bool) -> ClientSession:
        """A session to send on. With `check`, one proven alive by a ping first, so a call
        that must not be re-sent never goes out on a session that already died."""
        try:
            session = await self.session()
            if check:
                try:
                    async with asyncio.timeout(_PING_TIMEOUT):
                        await session.send_ping()
                except Exception:
                    self._broken = True
                    session = await self.session()
            return session
        except Exception as exc:  # nothing was sent: the outcome is known (not run)
            raise RetryableToolError(
                f"cannot reach MCP server {self.server.name}: {_text(exc)}"
            ) from None


def _classify(exc: BaseException) -> str:
    """`failed` (the server answered with an error: it did not run, or ran and failed),
    `unsent` (the session had expired; the request was not processed) or `unknown`."""
    from mcp import MCPError
    from mcp.types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT

    if isinstance(exc, MCPError):
        text = exc.message.lower()
        if (
            exc.code == INVALID_REQUEST
            and "session" in text
            and ("termin" in text or "not found" in text)
        ):
            return "unsent"  # the server no longer knows the session (restarted, expired)
        if exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT, INTERNAL_ERROR):
            return "unknown"
        return "failed"
    if isinstance(exc, RuntimeError):
        # The SDK's own verdict on an answer it received: structured content failing the
        # tool's output schema, or a request for more input (not supported here).
        return "failed"
    return "unknown"


def _text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # the transport's task group wraps the cause it reports
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def tool_result_value(result: CallToolResult, label: str = "tool") -> Any:
    """The value recorded in `tool_result` for an MCP result; raises `RemoteToolError` for
    a result with `isError`."""
    blocks = [_block(b) for b in result.content]
    if result.is_error:
        text = " ".join(b for b in blocks if isinstance(b, str)) or "the tool reported an error"
        raise RemoteToolError(f"{label}: {text}")
    if result.structured_content is not None:
        return result.structured_content
    if len(blocks) == 1 and isinstance(blocks[0], str):
        return blocks[0]
    return blocks


def _block(block: Any) -> Any:
    kind = getattr(block, "type", "")
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4
        return {"type": kind, "mime_type": block.mime_type, "omitted_bytes": size}
    if kind == "resource":
        res = block.resource
        out: dict[str, Any] = {"type": "resource", "uri": res.uri}
        if getattr(res, "text", None) is not None:
            out["text"] = res.text
        else:
            out["mime_type"] = getattr(res, "mime_type", None)
        return out
    if kind == "resource_link":
        return {"type": "resource_link", "uri": block.uri, "name": block.name}
    return {"type": kind or "unknown"}


async def discover(*servers: MCPServer) -> list[MCPTool]:
    """Connect to each server, list its tools and build them (in the running loop)."""
    _require_mcp()
    tools: list[MCPTool] = []
    for server in servers:
        conn = MCPConnection(server)
        try:
            remote = await conn.list_tools()
        finally:
            await conn.aclose()
        tools.extend(t for t in (build_tool(server, r) for r in remote) if t is not None)
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        from ...errors import ConfigError

        raise ConfigError(
            f"MCP servers publish tools with the same name: {', '.join(dupes)}; "
            "give the servers a prefix="
        )
    return tools


def mcp_tools(*servers: MCPServer) -> list[MCPTool]:
    """`discover` from synchronous code (an agent module, at start-up).

    Runs in a helper thread with its own event loop, so it also works where a loop is
    already running; the sessions used by calls are opened later, in the caller's loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcp-discover") as pool:
        return pool.submit(asyncio.run, discover(*servers)).result()


def follow(agent: Agent, *servers: MCPServer) -> None:
    """Keep `agent` up to date with `tools/list_changed` from `servers`.

    Each notification (received on a session opened by a call, in the running loop)
    re-lists the server's tools; new versions are added to the agent and shown to the
    model from then on (`Agent.add_tools`); old versions stay for old threads.
    """
    for server in servers:
        if agent not in server._followers:
            server._followers.append(agent)


async def _refresh(server: MCPServer, conn: MCPConnection) -> None:
    try:
        remote = await conn.list_tools()
    except Exception as exc:
        log.warning("MCP server %s: re-listing tools failed: %s", server.name, exc)
        return
    fresh = [t for t in (build_tool(server, r) for r in remote) if t is not None]
    for agent in server._followers:
        known = {t.key for t in agent.registry}
        added = [t for t in fresh if t.key not in known]
        if added:
            agent.add_tools(added)
            log.info(
                "MCP server %s: agent %s now has %s",
                server.name,
                agent.name,
                ", ".join(t.key for t in added),
            )
