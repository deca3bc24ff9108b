"""examples/deploybot: production needs approval; staging does not; questions; errors."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from threadline import MemoryStore, Runtime, Status
from threadline.testing import ScriptedModel, intent


async def test_happy_path_deploys_only_after_approval(deploybot: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("list_git_tags"),
            intent("deploy_backend", tag="v1.5.0", environment="production"),
            intent("done_for_now", message="deployed v1.5.0"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy the latest tag to production")
    assert thread.status == Status.AWAITING_APPROVAL
    assert deploybot.DEPLOYMENTS == []
    (call_id,) = thread.state.pending
    await rt.approve(thread.id, call_id, by="ana")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert [(d["target"], d["tag"]) for d in deploybot.DEPLOYMENTS] == [("backend", "v1.5.0")]
    kinds = [e.kind for e in thread.events]
    assert kinds.index("tool_started") == kinds.index("approval") + 1


async def test_staging_needs_no_approval(deploybot: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("deploy_backend", tag="v1.4.1", environment="staging"),
            intent("done_for_now", message="ok"),
        ]
    )
    thread = await Runtime(MemoryStore(), model=model).launch(deploybot.agent, "v1.4.1 to staging")
    assert thread.status == Status.DONE
    assert len(deploybot.DEPLOYMENTS) == 1


async def test_rejection_with_feedback_and_edited_arguments(deploybot: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("deploy_frontend", tag="v1.5.0", environment="production"),
            intent("deploy_frontend", tag="v1.5.0", environment="staging"),
            intent("done_for_now", message="done"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "ship the frontend")
    (first,) = thread.state.pending
    await rt.approve(thread.id, first, approved=False, comment="not on a Friday")
    thread = await rt.advance(thread.id)
    assert "not on a Friday" in model.contexts[1].as_text()
    (second,) = thread.state.pending
    await rt.approve(
        thread.id, second, edited_arguments={"tag": "v1.4.1", "environment": "staging"}
    )
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE
    assert [(d["tag"], d["environment"]) for d in deploybot.DEPLOYMENTS] == [("v1.4.1", "staging")]


async def test_clarification_then_deploy(deploybot: ModuleType) -> None:
    model = ScriptedModel(
        [
            intent("request_more_information", message="Backend or frontend?"),
            intent("deploy_backend", tag="v1.5.0", environment="staging"),
            intent("done_for_now", message="ok"),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy v1.5.0 to staging")
    assert thread.status == Status.AWAITING_HUMAN
    thread = await rt.respond(thread.id, thread.state.human_request or "", "backend")
    thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE and len(deploybot.DEPLOYMENTS) == 1


def test_the_tag_is_an_enum_of_the_tags_that_exist(deploybot: ModuleType) -> None:
    assert deploybot.available_tags() == ["v1.5.0", "v1.4.1", "v1.4.0"]  # newest first
    for name in ("deploy_backend", "deploy_frontend"):
        schema = deploybot.agent.registry.get(name).schema()
        assert schema["properties"]["tag"]["enum"] == deploybot.available_tags()


async def test_the_model_sees_the_enum_and_the_prefetched_tags(deploybot: ModuleType) -> None:
    model = ScriptedModel([intent("request_more_information", message="Which one?")])
    thread = await Runtime(MemoryStore(), model=model).launch(deploybot.agent, "deploy")
    kinds = [e.kind for e in thread.events]
    assert kinds[:4] == ["user_message", "tool_call", "tool_result", "model_call"]
    assert thread.events[1].tool == "list_git_tags"  # pre-fetched, before the model is asked
    (context,) = model.contexts
    tools = {t.name: t.parameters for t in context.tools}
    assert tools["deploy_backend"]["properties"]["tag"]["enum"] == deploybot.available_tags()
    assert "v1.4.1" in context.as_text()  # the listed tags are in the context too


def test_the_local_grammar_follows_the_enum(deploybot: ModuleType) -> None:
    pytest.importorskip("llama_cpp", reason="needs threadline[local] (llama-cpp-python)")
    from threadline.models.local import grammar_text

    tools = deploybot.agent.registry
    schema = {
        "type": "object",
        "properties": {
            "intent": {"const": "deploy_backend"},
            "arguments": tools.get("deploy_backend").schema(),
        },
    }
    grammar = grammar_text(schema)
    tags = re.findall(r'"\\"(v[0-9.]+)\\""', grammar)
    assert sorted(tags) == sorted(deploybot.available_tags())


async def test_a_tag_that_does_not_exist_is_rejected_before_approval(
    deploybot: ModuleType,
) -> None:
    model = ScriptedModel(
        [intent("deploy_backend", tag=f"v9.{i}", environment="production") for i in range(5)]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy v9 to production")
    assert thread.status == Status.ESCALATED
    kinds = [e.kind for e in thread.events]
    assert "approval_requested" not in kinds and "tool_started" not in kinds
    invalid = [e for e in thread.events if e.kind == "invalid_output"]
    assert len(invalid) == 3
    assert "tag" in invalid[0].reason and "'v1.5.0'" in invalid[0].reason
    assert deploybot.DEPLOYMENTS == []


@pytest.mark.local_model
async def test_with_the_local_model_the_approval_is_for_a_tag_that_exists(
    deploybot: ModuleType,
) -> None:
    pytest.importorskip("llama_cpp", reason="needs threadline[local] (llama-cpp-python)")
    from threadline.models.registry import resolve_model

    rt = Runtime(MemoryStore(), model=resolve_model("local:smollm2"))
    thread = await rt.launch(deploybot.agent, "deploy the latest tag to production")
    assert thread.status == Status.AWAITING_APPROVAL, [
        (e.kind, getattr(e, "output", "")) for e in thread.events
    ]
    (shown,) = [e for e in thread.events if e.kind == "approval_requested"]
    assert shown.arguments["tag"] in deploybot.available_tags()
    assert deploybot.DEPLOYMENTS == []
