"""Tools as intents: schemas from types, validation before anything runs, registry."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

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
