"""Secrets are masked in what the model sees, in logs, and (unless allowed) in storage."""

from __future__ import annotations

import io
import json
import re

import pytest

from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool
from threadline.context.redaction import MASK, Redactor
from threadline.errors import ConfigError
from threadline.observability import JsonEventLog
from threadline.testing import ScriptedModel, intent

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


@tool
def read_config(service: str) -> dict:
    """Read a service's configuration."""
    return {
        "service": service,
        "api_key": KEY,
        "url": "postgres://app:hunter2secret@db:5432/x",
        "headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz012345"},
    }


def _agent(**settings: object) -> Agent:
    context = ContextSettings(**settings)  # type: ignore[arg-type]
    return Agent("ops", tools=[read_config], instructions="Inspect configs.", context=context)


async def _run(agent: Agent) -> tuple[Runtime, ScriptedModel, io.StringIO, str]:
    log = io.StringIO()
    model = ScriptedModel(
        [intent("read_config", service="billing"), intent("done_for_now", message="done")]
    )
    rt = Runtime(
        MemoryStore(),
        agents=[agent],
        model=model,
        observers=[JsonEventLog(log, redact=Redactor().redact)],
    )
    thread = await rt.launch(agent, "check billing; my token is ghp_" + "x" * 36)
    return rt, model, log, thread.id


async def test_a_key_planted_in_a_tool_result_never_reaches_the_model_or_the_store() -> None:
    rt, model, log, thread_id = await _run(_agent())
    seen = model.contexts[1].messages[0].content
    assert KEY not in seen and "hunter2secret" not in seen
    assert "abcdefghijklmnopqrstuvwxyz012345" not in seen and "ghp_xxxx" not in seen
    assert f'api_key: "{MASK}"' in seen
    assert "postgres://app:[REDACTED]@db:5432/x" in seen  # the URL stays useful
    stored = await rt.store.load(thread_id)
    raw = json.dumps(stored.to_dict())
    assert KEY not in raw and "hunter2secret" not in raw and "ghp_xxxx" not in raw
    assert "service" in raw and "billing" in raw
    await rt.replay(thread_id)


async def test_an_agent_may_keep_originals_in_storage_but_the_model_still_sees_masks() -> None:
    rt, model, _, thread_id = await _run(_agent(store_secrets=True))
    stored = json.dumps((await rt.store.load(thread_id)).to_dict())
    assert KEY in stored
    assert KEY not in model.contexts[1].messages[0].content


def test_log_lines_are_masked() -> None:
    log = io.StringIO()
    JsonEventLog(log, redact=Redactor().redact)
    redactor = Redactor()
    line = json.dumps({"message": f"failed with key {KEY} and password=opensesame1"})
    out = redactor(line)
    assert KEY not in out and "opensesame1" not in out


def test_user_patterns_and_values() -> None:
    redactor = Redactor([r"ACCT-\d{6}", re.compile(r"pin (\d{4})")], values=["blue-falcon-42"])
    text = "acct ACCT-123456, pin 9876, codename blue-falcon-42, order 12345"
    assert redactor(text) == f"acct {MASK}, pin {MASK}, codename {MASK}, order 12345"
    assert redactor(redactor(text)) == redactor(text)
    agent = _agent(redact={"patterns": [r"ACCT-\d{6}"], "values": ["blue-falcon-42"]})
    assert agent.context.redactor(text).count(MASK) == 2  # type: ignore[misc]
    with pytest.raises(ConfigError, match="not a valid regex"):
        Redactor(["(unclosed"])


def test_plain_text_is_left_alone() -> None:
    text = "Book flight HAT069 for mia_li_3668, reservation ZFA04Y, card ending 7447."
    assert Redactor()(text) == text


async def test_redaction_can_be_switched_off() -> None:
    rt, model, _, _ = await _run(_agent(redact=False, store_secrets=True))
    assert KEY in model.contexts[1].messages[0].content
