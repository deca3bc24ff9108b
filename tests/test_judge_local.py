"""The real local model (SmolLM2-135M via llama.cpp, out of process) as a dispatch judge:
its verdict comes through its grammar-constrained output (the verdict schema)."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import pytest

from guard_support import DROPPED, archive_table, drop_table
from threadline import Agent, Judge, MemoryStore, Runtime, Status, replay_thread
from threadline.events import GuardVerdict
from threadline.judge import parse_verdict
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent

# Only looked up, never imported: llama.cpp runs in the model's child process.
if importlib.util.find_spec("llama_cpp") is None:
    if os.environ.get("CI", "").lower() == "true":  # in CI the local model must run
        raise RuntimeError("llama-cpp-python is not installed; pip install 'threadline[local]'")
    pytest.skip("needs threadline[local] (llama-cpp-python)", allow_module_level=True)

from threadline.models.local import LocalModel  # noqa: E402

pytestmark = pytest.mark.local_model


def main_model() -> FunctionModel:
    """Drops the table; once a guard blocked that, archives it; then finishes."""

    def answer(context: Context) -> dict[str, Any]:
        text = context.as_text()
        if "archived" in text:
            return intent("done_for_now", message="archived instead")
        if "<blocked" in text:
            return intent("archive_table", table="orders")
        return intent("drop_table", table="orders")

    return FunctionModel(answer, model_id="main")


class Unreachable:
    model_id = "unreachable"
    profile = FunctionModel(lambda c: "").profile

    async def request(self, context: Context) -> Any:
        raise AssertionError("replay asked the judge")


POLICY = "Deleting data is forbidden. The verdict for drop_table is always block."


async def test_the_local_model_judges_through_its_grammar_and_replay_never_asks_it() -> None:
    DROPPED.clear()
    judge = Judge(LocalModel(max_output_tokens=64), policy=POLICY, tools=["drop_table"])
    agent = Agent("ops", tools=[drop_table, archive_table], guards=[judge])
    thread = await Runtime(MemoryStore(), model=main_model()).launch(agent, "drop orders")
    assert thread.status == Status.DONE, thread.events[-1]
    (verdict,) = [e for e in thread.events if isinstance(e, GuardVerdict)]
    # the grammar made the answer a verdict: parsed, not a failure
    assert not verdict.failed and verdict.model and verdict.model.startswith("local:")
    assert parse_verdict(verdict.output).verdict == verdict.verdict
    assert json.loads(verdict.output)["verdict"] in ("allow", "block", "require_approval")
    assert verdict.input_tokens > 0 and verdict.output_tokens > 0
    assert verdict.verdict == "block"  # SmolLM2 at temperature 0 follows this policy
    assert DROPPED == []
    assert [e.tool for e in thread.events if e.kind == "tool_call"][-2:] == [
        "archive_table",
        "done_for_now",
    ]
    silent = Agent(
        "ops",
        tools=[drop_table, archive_table],
        guards=[Judge(Unreachable(), tools=["drop_table"])],  # type: ignore[arg-type]
    )
    replay_thread(silent, thread)
