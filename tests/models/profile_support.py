"""`threadline profile` / `render` against a real model: what they count for a thread's
next call, next to what the model then reports for that very call.

Used by the local-model and llama-cpp-python server tests (which start their models)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kill_support import cli
from threadline import Runtime, SQLiteStore
from threadline.models.base import Model

__all__ = ["Counted", "count_next_call"]

ROOT = Path(__file__).resolve().parents[2]
DEPLOYBOT = f"{ROOT / 'examples' / 'deploybot' / 'agent.py'}:agent"
_TITLE = re.compile(r"(\d+) input\s+tokens of a (\d+) window")


@dataclass(frozen=True)
class Counted:
    """One model call, counted three ways."""

    profile: int  # `threadline profile`'s total
    window: int  # the window `threadline profile` shows
    render: int  # `threadline render --json`'s input_tokens
    reported: int  # the model's own count, recorded on the `model_call` event


def _cli(tmp: Path, spec: str, *args: str) -> str:
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp / 't.db'}",
        "THREADLINE_MODEL": spec,
        "THREADLINE_LOG": "off",
        "COLUMNS": "200",
    }
    out = cli(env, tmp, *args, "--agent", DEPLOYBOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def count_next_call(tmp: Path, spec: str, model: Model) -> Counted:
    """Deploybot's first model call (after its pre-fetched tags) on `model`, configured
    for the CLI as `spec`: profiled and rendered first, then made."""
    from threadline.bootstrap import load_agents

    ((agent, _),) = load_agents([DEPLOYBOT]).values()
    rt = Runtime(SQLiteStore(str(tmp / "t.db")), agents=[agent], model=model)
    thread = await rt.launch(agent, "deploy the backend v1.5.0 to production", advance=False)
    thread = await rt.advance(thread, max_steps=1)  # the pre-fetch: list_git_tags
    assert [e.kind for e in thread.events][-1] == "tool_result", thread.events
    title = _TITLE.search(_cli(tmp, spec, "profile", thread.id))
    assert title is not None
    rendered = json.loads(_cli(tmp, spec, "render", thread.id, "--json"))
    before = len(thread.events)
    thread = await rt.advance(thread, max_steps=1)
    (call,) = [e for e in thread.events[before:] if e.kind == "model_call"]
    return Counted(int(title[1]), int(title[2]), rendered["input_tokens"], call.input_tokens)
