"""Tools as intents: schemas from types, validation before anything runs, registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from shared_data import require_shared
from threadline import Tool, ToolContext, ToolRegistry, tool
from threadline.errors import ToolDefinitionError
from threadline.tools import compact_validation_error


@tool(side_effects=True, idempotent=True, approval=lambda a: a.env == "production")
def deploy(
    tag: str, env: Literal["staging", "production"], ctx: ToolContext, dry_run: bool = False
) -> str:
    """Deploy a tag.

    Args:
        tag: the git tag
        env: where to deploy
    """
    return f"{tag}:{env}:{ctx.idempotency_key}:{dry_run}"


def test_schema_comes_from_the_signature_and_hides_the_context() -> None:
    schema = deploy.schema()
    assert set(schema["properties"]) == {"tag", "env", "dry_run"}
    assert schema["required"] == ["tag", "env"]
    assert schema["properties"]["env"]["enum"] == ["staging", "production"]
    assert schema["properties"]["tag"]["description"] == "the git tag"
    assert deploy.description == "Deploy a tag."
    assert deploy.key == "deploy@1"
    assert deploy.side_effects and deploy.idempotent


def test_validation_rejects_wrong_types_unknown_and_missing_arguments() -> None:
    with pytest.raises(ValidationError) as info:
        deploy.validate({"tag": "v1", "env": "moon", "force": True})
    reason = compact_validation_error("deploy", info.value)
    assert reason.startswith("invalid arguments for deploy:")
    assert "env" in reason and "force: unexpected argument" in reason
    with pytest.raises(ValidationError):
        deploy.validate({"env": "staging"})


def test_approval_policy_never_always_and_predicate() -> None:
    assert deploy.needs_approval(deploy.validate({"tag": "v1", "env": "production"}))
    assert not deploy.needs_approval(deploy.validate({"tag": "v1", "env": "staging"}))

    @tool(approval="always")
    def a(x: int) -> int:
        return x

    @tool
    def b(x: int) -> int:
        return x

    assert a.needs_approval(a.validate({"x": 1}))
    assert not b.needs_approval(b.validate({"x": 1}))


async def test_sync_and_async_functions_are_invoked_with_the_context() -> None:
    ctx = ToolContext("th_1", "c1", "key-1", 2)
    out = await deploy.invoke(deploy.validate({"tag": "v1", "env": "staging"}), ctx)
    assert out == "v1:staging:key-1:False"

    @tool
    async def double(x: int) -> int:
        return 2 * x

    assert await double.invoke(double.validate({"x": 21}), ctx) == 42


async def test_tool_from_a_pydantic_model() -> None:
    class Refund(BaseModel):
        """Refund an order."""

        order_id: str
        amount: float

    seen: list[object] = []

    def handle(args: Refund, ctx: ToolContext) -> str:
        seen.append((args, ctx.call_id))
        return "refunded"

    t = Tool.from_model(Refund, handle, side_effects=True, approval="always", version="3")
    assert t.name == "refund" and t.key == "refund@3" and t.description == "Refund an order."
    assert (
        await t.invoke(t.validate({"order_id": "o1", "amount": 5}), ToolContext("th", "c9", "k", 1))
        == "refunded"
    )
    assert seen and seen[0][1] == "c9"  # type: ignore[index]


class _Lookup(BaseModel):
    """Look an order up.

    Only orders of the last year.
    """

    order_id: str


def _lookup(order_id: str) -> str:
    """Find an order
    by its id.

    Args:
        order_id: the order
    """
    return order_id


@pytest.mark.parametrize(
    ("build", "docstring_summary"),
    [
        (lambda **kw: Tool.from_function(_lookup, **kw), "Find an order by its id."),
        (lambda **kw: Tool.from_model(_Lookup, **kw), "Look an order up."),
    ],
    ids=["from_function", "from_model"],
)
def test_a_given_description_wins_over_the_docstring(
    build: Callable[..., Tool], docstring_summary: str
) -> None:
    assert build().description == docstring_summary  # the first paragraph, on one line
    assert build(description="  Fetch one order. ").description == "Fetch one order."
    assert build(description="").description == ""  # given empty: not the docstring


def test_bad_definitions_are_rejected_with_a_clear_error() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(ToolDefinitionError, match="needs a type annotation"):
        tool(untyped)

    def star(*args: int) -> None:
        return None

    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(star)
    with pytest.raises(ToolDefinitionError, match="tool name"):
        tool(name="has space")(lambda: None)


def test_registry_keys_by_name_and_version_and_serves_the_newest() -> None:
    @tool(name="lookup", version="1")
    def v1(q: str) -> str:
        return "v1"

    @tool(name="lookup", version="2")
    def v2(q: str, limit: int = 5) -> str:
        return "v2"

    reg = ToolRegistry([v2, v1])
    assert reg.get("lookup") is v2
    assert reg.get("lookup", "1") is v1
    assert [t.key for t in reg.latest()] == ["lookup@2"]
    assert "lookup@1" in reg
    with pytest.raises(ToolDefinitionError):
        reg.register(tool(name="lookup", version="1")(lambda q: q))  # type: ignore[arg-type]


# -- tools from a published JSON Schema ----------------------------------------------------

TAU_TOOLS = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tau-bench-airline" / "tools.json"
)

REFUND_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^o[0-9]+$"},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}


def _published_tau_tools() -> list[dict]:
    require_shared(TAU_TOOLS)
    return [t["function"] for t in json.loads(TAU_TOOLS.read_text())]


def test_json_schema_tool_shows_the_published_schema_verbatim() -> None:
    t = Tool.from_json_schema("refund", REFUND_SCHEMA, description="Refund an order.")
    assert t.schema() == REFUND_SCHEMA
    assert json.dumps(t.schema()) == json.dumps(REFUND_SCHEMA)  # same keys, same order
    assert t.schema() is not REFUND_SCHEMA  # a private copy: later edits do not leak in
    assert t.spec() == {
        "name": "refund",
        "description": "Refund an order.",
        "parameters": REFUND_SCHEMA,
    }


def test_json_schema_validation_is_draft_2020_12_and_never_coerces() -> None:
    t = Tool.from_json_schema("refund", REFUND_SCHEMA)
    ok = {"order_id": "o12", "amount": 2.5, "items": [{"sku": "a", "qty": 1}]}
    assert t.validate(ok).model_dump(mode="json") == ok
    bad = [
        {"order_id": "o12", "amount": "2.5"},  # pydantic's lax mode would coerce this
        {"order_id": "x12", "amount": 1},  # pattern
        {"order_id": "o1", "amount": 0},  # exclusiveMinimum
        {"order_id": "o1", "amount": 1, "items": [{"sku": "a", "qty": 1.5}]},  # integer
        {"order_id": "o1", "amount": 1, "force": True},  # additionalProperties
        {"amount": 1},  # required
        {"order_id": "o1", "amount": True},  # a boolean is not a number
    ]
    for arguments in bad:
        with pytest.raises(ValidationError):
            t.validate(arguments)
    with pytest.raises(ValidationError) as info:
        t.validate({"order_id": "o1", "amount": 1, "items": [{"sku": "a", "qty": "x"}]})
    reason = compact_validation_error("refund", info.value)
    assert reason.startswith("invalid arguments for refund: items.0.qty:"), reason
    assert "integer" in reason
    with pytest.raises(ValidationError) as info:
        t.validate(["not", "an", "object"])
    assert "JSON object" in compact_validation_error("refund", info.value)


async def test_json_schema_tool_receives_exactly_the_validated_json() -> None:
    seen: list[tuple[object, str]] = []

    def refund(arguments: dict, ctx: ToolContext) -> str:
        seen.append((arguments, ctx.call_id))
        return "refunded"

    t = Tool.from_json_schema(
        "refund",
        REFUND_SCHEMA,
        refund,
        approval=lambda a: a["amount"] > 100,
        side_effects=True,
        version="2",
    )
    sent = {"order_id": "o7", "amount": 12.0, "items": [{"sku": "a", "qty": 3}]}
    args = t.validate(sent)
    assert not t.needs_approval(args)
    assert t.needs_approval(t.validate({"order_id": "o7", "amount": 500}))
    assert await t.invoke(args, ToolContext("th", "c3", "k", 1)) == "refunded"
    assert seen == [(sent, "c3")]
    assert type(seen[0][0]["amount"]) is float  # exactly what was sent, no re-typing
    assert t.key == "refund@2" and t.side_effects

    async def lookup(arguments: dict) -> list:
        return sorted(arguments)

    t2 = Tool.from_json_schema("lookup", {"type": "object"}, lookup)
    assert await t2.invoke(t2.validate({"b": 1, "a": 2}), ToolContext("t", "c", "k")) == ["a", "b"]


def test_json_schema_refs_resolve_locally_and_are_never_fetched() -> None:
    local = {
        "type": "object",
        "$defs": {"sku": {"type": "string", "minLength": 2}},
        "properties": {"sku": {"$ref": "#/$defs/sku"}},
    }
    t = Tool.from_json_schema("stock", local)
    assert t.validate({"sku": "ab"}).model_dump(mode="json") == {"sku": "ab"}
    with pytest.raises(ValidationError):
        t.validate({"sku": "a"})
    # a $ref to a URL that would answer: it is not fetched, the validation fails cleanly
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"type": "integer"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/x.json"
        t = Tool.from_json_schema("remote", {"type": "object", "properties": {"x": {"$ref": url}}})
        with pytest.raises(ValidationError) as info:
            t.validate({"x": 1})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "cannot be applied" in compact_validation_error("remote", info.value)
    assert hits == []


def test_json_schema_tool_rejects_bad_schemas_and_handlers() -> None:
    with pytest.raises(ToolDefinitionError, match="invalid JSON Schema"):
        Tool.from_json_schema("x", {"type": "object", "properties": {"a": {"type": "nope"}}})
    with pytest.raises(ToolDefinitionError, match="type 'object'"):
        Tool.from_json_schema("x", {"type": "string"})
    with pytest.raises(ToolDefinitionError, match="handler"):
        Tool.from_json_schema("x", {"type": "object"}, lambda a, b, c: None)


def test_json_schema_tools_in_an_agent_validate_model_output() -> None:
    from datetime import UTC, datetime

    from threadline import Agent
    from threadline.reducer import interpret

    agent = Agent("shop", tools=[Tool.from_json_schema("refund", REFUND_SCHEMA, lambda a: a)])
    at = datetime.now(UTC)
    [call] = interpret(
        agent,
        json.dumps({"intent": "refund", "arguments": {"order_id": "o1", "amount": 3}}),
        (),
        seq=1,
        at=at,
    )
    assert call.kind == "tool_call" and call.arguments == {"order_id": "o1", "amount": 3}
    [bad] = interpret(
        agent,
        json.dumps({"intent": "refund", "arguments": {"order_id": "o1", "amount": "3"}}),
        (),
        seq=1,
        at=at,
    )
    assert bad.kind == "invalid_output" and "amount" in bad.reason
    variant = next(
        v for v in agent.output_schema()["oneOf"] if v["properties"]["intent"]["const"] == "refund"
    )
    assert variant["properties"]["arguments"] == REFUND_SCHEMA


def test_tau_bench_airline_tools_are_shown_as_published() -> None:
    """The 14 published airline tools: what the model is shown is what was published,
    token for token (the pydantic round trip added titles, $defs and additionalProperties)."""
    from threadline import Agent, ContextSettings
    from threadline.context.tokens import BPECounter
    from threadline.events import Thread, UserMessage
    from threadline.prompts import renderer_for

    published = _published_tau_tools()
    tools = [
        Tool.from_json_schema(f["name"], f["parameters"], description=f["description"])
        for f in published
    ]
    assert len(tools) == 14
    counter = BPECounter("o200k_base")
    shown = counter.count(json.dumps([t.spec() for t in tools]))
    expected = counter.count(json.dumps(published))
    assert shown == expected
    agent = Agent(
        "airline", tools=tools, human_tools=False, context=ContextSettings(format="messages")
    )
    thread = Thread("th_tau", "airline")
    thread.append(UserMessage(seq=0, at=thread.created_at, text="Cancel my trip"))
    context = renderer_for(agent).render(thread).context
    assert [
        {"name": s.name, "description": s.description, "parameters": s.parameters}
        for s in context.tools
    ] == published
