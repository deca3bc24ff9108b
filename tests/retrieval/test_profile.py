"""`threadline profile` shows the retrieval share of a thread that retrieved (subprocesses,
a real SQLite store and index, the CLI as users run it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

AGENT = """
from threadline import Agent
from threadline.retrieval.tool import knowledge_tool, retrieval_settings

search = knowledge_tool(k=2)
agent = Agent(
    "kbq",
    tools=[search],
    instructions="Answer from the passages.",
    context=retrieval_settings(search, share=0.3, split="dynamic"),
)
"""


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "THREADLINE_STORE": f"sqlite:///{tmp}/t.db",
        "THREADLINE_RETRIEVAL": f"sqlite:///{tmp}/kb.db",
        "THREADLINE_EMBEDDINGS": "none",
        "THREADLINE_MODEL": f"scripted:{tmp}/answers.json",
        "THREADLINE_LOG": "off",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_profile_shows_the_retrieval_share(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "wifi.md").write_text("# Wifi\n\nOnboard wifi costs eight dollars.\n")
    (tmp_path / "answers.json").write_text(
        json.dumps([{"intent": "done_for_now", "arguments": {"message": "$8"}}])
    )
    assert cli(tmp_path, "index", "add", "kb").returncode == 0
    out = cli(tmp_path, "run", "agent.py:agent", "How much is the wifi?")
    assert out.returncode == 0, out.stderr
    thread_id = json.loads(cli(tmp_path, "threads", "list", "--json").stdout.splitlines()[0])["id"]

    out = cli(tmp_path, "profile", thread_id, "--agent", "agent.py:agent")
    assert out.returncode == 0, out.stderr
    assert "retrieved" in out.stdout
    m = re.search(r"retrieval share: (\d+) of (\d+) tokens used", out.stdout)
    assert m, out.stdout
    used, cap = int(m.group(1)), int(m.group(2))
    assert 0 < used <= cap
    assert "dynamic split" in out.stdout
