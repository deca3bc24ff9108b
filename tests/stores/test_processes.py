"""Cross-process races: separate OS processes append to one thread at the same seqs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from store_env import StoreEnv

from threadline.events import Thread, UserMessage, utcnow
from threadline.stores import new_thread_id

WRITER = Path(__file__).with_name("race_writer.py")


@pytest.mark.slow
async def test_processes_racing_on_one_thread_write_each_seq_once(
    store_env: StoreEnv, tmp_path: Path
) -> None:
    if store_env.kind == "memory":
        pytest.skip("the memory store lives in one process")
    store = store_env.open()
    t = Thread(new_thread_id(), "race")
    t.append(UserMessage(seq=0, at=utcnow(), text="go"))
    await store.create(t)
    await store.ping()
    target, writers = 300, 4
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - plain processes, waited for below
            [sys.executable, str(WRITER), store_env.url, t.id, str(target), f"w{i}", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    for _ in range(3000):  # wait (up to a minute) until every writer is connected
        ready = list(tmp_path.glob("ready-*"))  # noqa: ASYNC240
        if len(ready) == writers or any(p.poll() for p in procs):
            break
        await asyncio.sleep(0.02)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    wins = sum(int(o[0]) for o in outputs)
    conflicts = sum(int(o[1]) for o in outputs)
    loaded = await store.load(t.id)
    assert [e.seq for e in loaded.events] == list(range(target))
    assert wins == target - 1  # every seq after 0 written by exactly one process
    authors = {e.result for e in loaded.events[1:]}  # type: ignore[union-attr]
    assert len(authors) > 1, "the writers never overlapped; the race did not happen"
    print(
        f"\n{store_env.kind}: {wins} appends won, {conflicts} conflicts refused, "
        f"{len(authors)} writers"
    )
