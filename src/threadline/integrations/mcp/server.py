"""Threadline as an MCP server: `threadline mcp` serves a runtime to MCP clients.

Tools (each a thin adapter over `Runtime`, like the CLI and the HTTP API):

    list_agents                                  read
    launch_thread(agent, message)                launch   advances until the thread waits
    get_thread(thread_id, events=50)             read
    list_pending(limit=50)                       read     approvals, questions, budgets run out
    approve(thread_id, call_id, comment?)        respond  then advances the thread
    reject(thread_id, call_id, comment?)         respond  the agent sees the comment
    respond(thread_id, request_id, text)         respond  answers a question, advances
    raise_budget(thread_id, max_model_calls?,    admin    raises the thread's own budget,
                 max_tokens?, max_usd?)                   then advances it

This module imports the `mcp` SDK (the `mcp` extra); `threadline mcp` imports it on use.

Over stdio the caller is the local user (like the CLI). Over streamable HTTP every request
needs an API key of the HTTP server (`threadline keys create`): a request without a valid
key is refused with 401 before any MCP processing, and each tool checks the key's scopes
(read, launch, respond; admin implies all) exactly as the HTTP API's routes do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import ValidationError

from ...budgets import own_budget
from ...errors import ThreadlineError
from ...events import Budget, Escalated, Status, Thread
from ...observability.propagation import TRACEPARENT_KEY, parse_traceparent
from ...stores import key_store
from ...worker import advance_exclusively, default_owner

if TYPE_CHECKING:
    from ...runtime import Runtime
    from ...stores.base import Store

__all__ = ["Caller", "authenticate", "build_server", "http_app"]

_ALL_SCOPES = frozenset({"read", "launch", "respond", "admin"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a key's name and scopes, or the local user (stdio, --no-auth)."""

    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


LOCAL = Caller("local", _ALL_SCOPES)

_VERDICT_TOOLS = {
    "approve": (True, "Approve a pending tool call; the thread then runs until it waits again."),
    "reject": (False, "Reject a pending tool call; the agent is told, with `comment` as feedback."),
}
"""The verdict tools: name -> (approved, description)."""


async def authenticate(store: Store, authorization: str | None) -> Caller | None:
    """The caller a bearer key names, or None (missing, unknown or revoked key).

    Keys are looked up by sha256 digest, the same digest `threadline.server.auth` stores.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith("tl_") or len(token) > 200:
        return None
    key = await key_store(store).find(hashlib.sha256(token.encode()).hexdigest())
    if key is None or key.revoked_at is not None:
        return None
    return Caller(key.name, frozenset(key.scopes))


def build_server(runtime: Runtime, *, auth: bool = False) -> MCPServer:
    """An MCP server (the SDK's `MCPServer`) exposing `runtime` as tools.

    With `auth`, each tool reads the caller's key from the HTTP request's headers; without
    it (stdio, or HTTP with --no-auth on loopback) the caller is the local user.
    """
    server = MCPServer(
        "threadline",
        instructions="Launch Threadline agent threads, read them, and answer what waits "
        "for a human (approvals, questions, a budget run out).",
    )
    reading = ToolAnnotations(read_only_hint=True)
    acting = ToolAnnotations(destructive_hint=False, idempotent_hint=False)

    caller = _caller(runtime, auth)
    guarded = _guarded

    @server.tool(annotations=reading)
    async def list_agents(ctx: Context) -> dict[str, Any]:
        """The agents this server can launch threads of, with their tools."""
        await caller(ctx, "read")
        return {
            "agents": [
                {"name": a.name, "tools": [t.name for t in a.visible_tools()]}
                for a in runtime.agents.values()
            ]
        }

    @server.tool(annotations=acting)
    async def launch_thread(agent: str, message: str, ctx: Context) -> dict[str, Any]:
        """Start a thread of `agent` with the user's `message` and run it until it waits
        (done, or paused for an approval or a question). Returns the thread's state."""
        who = await caller(ctx, "launch")
        metadata = _trace_metadata(ctx)

        async def go() -> dict[str, Any]:
            thread = await runtime.launch(
                agent, message, channel="mcp", sender=who.name, metadata=metadata, advance=False
            )
            return await _advanced(runtime, thread.id)

        return await guarded(go())

    @server.tool(annotations=reading)
    async def get_thread(thread_id: str, ctx: Context, events: int = 50) -> dict[str, Any]:
        """A thread's state and its last `events` events."""
        await caller(ctx, "read")

        async def go() -> dict[str, Any]:
            thread = await runtime.store.load(thread_id)
            out = describe(thread)
            out["events"] = [e.model_dump(mode="json") for e in thread.events[-max(events, 0) :]]
            return out

        return await guarded(go())

    @server.tool(annotations=reading)
    async def list_pending(ctx: Context, limit: int = 50) -> dict[str, Any]:
        """What waits for a human: calls awaiting approval, open questions, and threads
        their own budget stopped (raise it with `raise_budget`)."""
        await caller(ctx, "read")

        async def go() -> dict[str, Any]:
            items: list[dict[str, Any]] = []
            for status in (Status.AWAITING_APPROVAL, Status.AWAITING_HUMAN, Status.ESCALATED):
                page = await runtime.store.list(status=status, limit=limit)
                for summary in page.items:
                    thread = await runtime.store.load(summary.id)
                    items.extend(_waiting(thread))
            return {"pending": items[:limit]}

        return await guarded(go())

    for name, (approved, doc) in _VERDICT_TOOLS.items():
        server.add_tool(_verdict_tool(runtime, caller, name, approved, doc), annotations=acting)

    @server.tool(annotations=acting)
    async def respond(thread_id: str, request_id: str, text: str, ctx: Context) -> dict[str, Any]:
        """Answer a thread's open question; the thread then runs until it waits again."""
        who = await caller(ctx, "respond")

        async def go() -> dict[str, Any]:
            await runtime.respond(thread_id, request_id, text, by=who.name, channel="mcp")
            return await _advanced(runtime, thread_id)

        return await guarded(go())

    server.add_tool(_raise_budget_tool(runtime, caller), annotations=acting)

    return server


def _caller(runtime: Runtime, auth: bool) -> Callable[[Context, str], Awaitable[Caller]]:
    """Who calls a tool: the key in the request's headers (with `auth`), else the local user."""

    async def caller(ctx: Context, scope: str) -> Caller:
        if not auth:
            return LOCAL
        who = await authenticate(runtime.store, (ctx.headers or {}).get("authorization"))
        if who is None:
            raise ToolError("send a valid API key: Authorization: Bearer tl_...")
        if not who.can(scope):
            raise ToolError(f"key {who.name!r} lacks the {scope!r} scope this tool needs")
        return who

    return caller


def _trace_metadata(ctx: Context) -> dict[str, Any] | None:
    """Over HTTP, the caller's W3C trace context joins the thread, as on the HTTP API."""
    parent = parse_traceparent((ctx.headers or {}).get("traceparent"))
    return {TRACEPARENT_KEY: parent.header()} if parent else None


async def _guarded(step: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await step
    except ThreadlineError as exc:
        raise ToolError(str(exc)) from None


def _verdict_tool(
    runtime: Runtime,
    caller: Callable[[Context, str], Awaitable[Caller]],
    name: str,
    approved: bool,
    doc: str,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The `approve` or the `reject` tool: the same but for the verdict."""

    async def tool(
        thread_id: str, call_id: str, ctx: Context, comment: str | None = None
    ) -> dict[str, Any]:
        who = await caller(ctx, "respond")

        async def go() -> dict[str, Any]:
            await runtime.approve(
                thread_id, call_id, approved=approved, comment=comment, by=who.name, channel="mcp"
            )
            return await _advanced(runtime, thread_id)

        return await _guarded(go())

    # The SDK names the tool and its argument schema after the function.
    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = doc
    return tool


def _raise_budget_tool(
    runtime: Runtime, caller: Callable[[Context, str], Awaitable[Caller]]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The `raise_budget` tool (the admin scope, as on the HTTP API)."""

    async def raise_budget(
        thread_id: str,
        ctx: Context,
        max_model_calls: int | None = None,
        max_tokens: int | None = None,
        max_usd: float | None = None,
    ) -> dict[str, Any]:
        """Raise the thread's own budget to the limits given (the other kinds keep theirs);
        a thread its budget stopped then runs until it waits again. An admin key."""
        who = await caller(ctx, "admin")
        try:
            budget = Budget(max_model_calls=max_model_calls, max_tokens=max_tokens, max_usd=max_usd)
        except ValidationError as exc:
            raise ToolError(f"not a budget: {exc.errors()[0]['msg']}") from None

        async def go() -> dict[str, Any]:
            await runtime.raise_budget(thread_id, budget, by=who.name)
            return await _advanced(runtime, thread_id)

        return await _guarded(go())

    return raise_budget


async def _advanced(runtime: Runtime, thread_id: str) -> dict[str, Any]:
    """Advance under a lease (a worker sharing the store never runs the same step), then
    describe the thread as it now stands."""
    await advance_exclusively(runtime, thread_id, owner=f"mcp:{default_owner()}")
    return describe(await runtime.store.load(thread_id))


def describe(thread: Thread) -> dict[str, Any]:
    """A thread's state in a few fields: what an MCP client needs to act next."""
    last = thread.events[-1] if thread.events else None
    out: dict[str, Any] = {
        "thread_id": thread.id,
        "agent": thread.agent,
        "status": thread.status.value,
        "events": len(thread.events),
        "waiting": _waiting(thread),
    }
    if last is not None and last.kind in ("done", "escalated"):
        out["outcome"] = last.model_dump(mode="json", exclude={"seq", "at"})
    return out


def _waiting(thread: Thread) -> list[dict[str, Any]]:
    state = thread.state
    items: list[dict[str, Any]] = []
    if thread.status == Status.AWAITING_APPROVAL:
        for call in state.pending.values():
            if call.approval == "requested":
                items.append(
                    {
                        "thread_id": thread.id,
                        "agent": thread.agent,
                        "kind": "approval",
                        "call_id": call.call_id,
                        "tool": call.tool,
                        "arguments": call.arguments,
                    }
                )
    elif thread.status == Status.ESCALATED:
        last = next((e for e in reversed(thread.events) if isinstance(e, Escalated)), None)
        if last is not None and own_budget(last):
            items.append(
                {
                    "thread_id": thread.id,
                    "agent": thread.agent,
                    "kind": "budget",
                    "reason": last.reason,
                    "figures": last.details.get("figures", {}),
                }
            )
    elif thread.status == Status.AWAITING_HUMAN and state.human_request:
        question = next(
            (
                e.question
                for e in reversed(thread.events)
                if e.kind == "human_request" and e.request_id == state.human_request
            ),
            "",
        )
        items.append(
            {
                "thread_id": thread.id,
                "agent": thread.agent,
                "kind": "question",
                "request_id": state.human_request,
                "question": question,
            }
        )
    return items


def http_app(server: MCPServer, store: Store, *, auth: bool, host: str) -> ASGIApp:
    """The streamable HTTP app at `/mcp`, behind the API-key check when `auth`."""
    inner: ASGIApp = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    if not auth:
        return inner

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        header = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"),
            None,
        )
        if await authenticate(store, header) is None:
            body = (
                b'{"type":"about:blank","title":"Unauthorized","status":401,'
                b'"detail":"send a valid API key: Authorization: Bearer tl_... '
                b'(create one with threadline keys create)"}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="threadline"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    return app
