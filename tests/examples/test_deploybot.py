"""examples/deploybot: production needs approval; staging does not; questions; errors."""

from __future__ import annotations

from types import ModuleType

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
            intent("deploy_frontend", tag="v1.5.0", environment="production"),
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


async def test_tool_error_spin_escalates(deploybot: ModuleType) -> None:
    model = ScriptedModel(
        [intent("deploy_backend", tag=f"v9.{i}", environment="staging") for i in range(5)]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(deploybot.agent, "deploy v9 to staging")
    assert thread.status == Status.ESCALATED
    errors = [e for e in thread.events if e.kind == "tool_error"]
    assert len(errors) == 3 and all(e.error_type == "ValueError" for e in errors)
    assert "unknown tag v9.0" in errors[0].message
    assert deploybot.DEPLOYMENTS == []
