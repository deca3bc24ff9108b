"""examples/policy_qa: answers from the indexed airline policy; replays without the index;
retrieved material stays inside its share of a small window."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from shared_data import require_shared
from threadline import MemoryStore, Runtime, Status
from threadline.replay import replay_thread
from threadline.testing import ScriptedModel, intent

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tau-bench-airline"


@pytest.fixture
def policy_qa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder) -> ModuleType:
    require_shared(DATA / "trajectories-gpt-4o.json")
    monkeypatch.setenv("THREADLINE_RETRIEVAL", f"sqlite:///{tmp_path / 'policy.db'}")
    monkeypatch.setenv("THREADLINE_EMBEDDINGS", "local")
    path = Path(__file__).resolve().parents[2] / "examples" / "policy_qa" / "agent.py"
    spec = importlib.util.spec_from_file_location("example_policy_qa", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def embedder():
    from threadline.retrieval import LocalEmbedder

    return LocalEmbedder()


def delete_index(folder: Path) -> int:
    """Delete the index files (database, WAL, shared memory); how many there were."""
    files = list(folder.glob("policy.db*"))
    for path in files:
        path.unlink()
    return len(files)


def hits_of(thread, call_prefix: str = "") -> list[dict]:
    results = [e for e in thread.events if e.kind == "tool_result"]
    return [h for e in results if e.call_id.startswith(call_prefix) for h in e.result]


async def test_the_user_question_is_searched_and_the_answer_sees_the_passages(
    policy_qa: ModuleType, tmp_path: Path
) -> None:
    report = await policy_qa.index_policy()
    assert report.added_chunks > 5
    assert (await policy_qa.index_policy()).unchanged_documents == 1
    model = ScriptedModel([intent("done_for_now", message="Only with travel insurance.")])
    rt = Runtime(MemoryStore(), model=model)
    question = "Can I cancel my basic economy flight and get a refund?"
    thread = await rt.launch(policy_qa.agent, question)
    assert thread.status == Status.DONE
    kinds = [e.kind for e in thread.events]
    assert kinds[:3] == ["user_message", "tool_call", "tool_result"]
    assert thread.events[1].tool == "search_knowledge" and thread.events[1].arguments == {
        "query": question
    }
    hits = hits_of(thread)
    assert len(hits) == 4
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["heading"].endswith("Cancel flight")
    assert all(re.fullmatch(r"[0-9a-f]{24}", h["chunk_id"]) and h["tokens"] > 0 for h in hits)
    seen = model.contexts[0].as_text()
    assert "basic economy or economy flights can be cancelled only if travel insurance" in seen


async def test_replay_with_the_index_deleted_rederives_every_event(
    policy_qa: ModuleType, tmp_path: Path
) -> None:
    await policy_qa.index_policy()
    model = ScriptedModel(
        [
            intent("search_knowledge", query="refund to original payment method how long"),
            intent("done_for_now", message="5 to 7 business days."),
        ]
    )
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(policy_qa.agent, "When do I get my refund?")
    assert thread.status == Status.DONE
    calls = [e for e in thread.events if e.kind == "tool_call" and e.tool == "search_knowledge"]
    assert len(calls) == 2  # the pre-fetched search of the message, then the model's own
    model_written = calls[-1]
    assert model_written.arguments == {"query": "refund to original payment method how long"}
    assert any("5 to 7 business days" in h["text"] for h in hits_of(thread))
    recorded = await rt.store.load(thread.id)

    assert delete_index(tmp_path) >= 1
    derived = replay_thread(policy_qa.agent, recorded)
    assert [e.model_dump(exclude={"at"}) for e in derived.events] == [
        e.model_dump(exclude={"at"}) for e in recorded.events
    ]
    assert delete_index(tmp_path) == 0  # replay never opened (so never re-created) it


@pytest.mark.parametrize("max_result_tokens", [None, 1500])
async def test_retrieval_and_history_shares_hold_under_a_small_window(
    policy_qa: ModuleType, max_result_tokens: int | None
) -> None:
    """Whether the result cut (`max_result_tokens`) is small (window / 10) or larger than
    the share (1500), the passages are cut to the share itself."""
    await policy_qa.index_policy()
    from threadline import Agent
    from threadline.retrieval.tool import knowledge_tool, retrieval_settings

    wide = knowledge_tool(k=8)  # about 1,100 tokens of passages: far over the share
    agent = Agent(
        name="policy_small",
        tools=[wide],
        instructions=policy_qa.agent.instructions,
        context=retrieval_settings(
            wide,
            share=0.4,
            context_window=2000,
            max_output_tokens=200,
            max_result_tokens=max_result_tokens,
        ),
    )
    answers = [intent("request_more_information", message=f"Question {n}?") for n in range(6)]
    model = ScriptedModel([*answers, intent("done_for_now", message="ok")])
    rt = Runtime(MemoryStore(), model=model)
    thread = await rt.launch(agent, "Which bags are free for a gold member flying economy?")
    for n in range(6):
        thread = await rt.respond(thread.id, thread.state.human_request or "", "x " * 60 + str(n))
        thread = await rt.advance(thread.id)
    assert thread.status == Status.DONE

    renderer = rt.renderer(agent.name)
    budget = renderer.budget
    rendered = renderer.render(thread)
    fixed = rendered.sections["system"] + rendered.sections["tools"] + 3
    avail = budget.available(fixed)
    history = sum(v for k, v in rendered.sections.items() if k.startswith("history:"))
    assert rendered.layout.retrieved_cap == int(avail * 0.4)
    assert 0 < rendered.sections["retrieved"] <= rendered.layout.retrieved_cap
    assert rendered.layout.retrieved_limit is not None  # cut to the share, whatever the cut
    # The share is used, not wasted on the smaller per-result cut (the cut falls at a line
    # end, so whole hits are kept and up to one hit's worth of the share stays free).
    assert rendered.sections["retrieved"] > min(budget.max_result_tokens, budget.window // 10)
    assert rendered.sections["retrieved"] > rendered.layout.retrieved_cap // 2
    assert history + rendered.sections["summary"] <= avail - rendered.sections["retrieved"]
    assert rendered.context.input_tokens <= budget.window - budget.max_output_tokens
    text = rendered.context.as_text()
    result_seq = next(e.seq for e in thread.events if e.kind == "tool_result")
    assert f"[truncated: full result in event {result_seq}]" in text
    hits = hits_of(thread)
    assert hits[0]["chunk_id"] in text  # the best hit survives the cut ...
    assert hits[-1]["chunk_id"] not in text  # ... the worst is what was cut
    # Every model call of the run stayed inside the window too.
    assert all(c.input_tokens <= budget.window - budget.max_output_tokens for c in model.contexts)
