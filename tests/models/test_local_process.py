"""The local model's child process: reuse, restart, crashes, timeouts, load parameters.

The model runs for real (SmolLM2-135M via llama.cpp) in its child process; the crashes are
real signals sent to that child. The runtime's process must survive every one of them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from threadline import Agent, MemoryStore, Runtime, tool
from threadline.errors import ConfigError, InvalidRequest, MissingExtraError, ModelError
from threadline.models.base import Context, Message
from threadline.models.local_process import (
    _result,
    describe_exit,
    read_frame,
    write_frame,
)

ROOT = Path(__file__).resolve().parents[2]


# -- the protocol, without a model ----------------------------------------------------------


def test_frames_round_trip_and_end_cleanly() -> None:
    buffer = io.BytesIO()
    write_frame(buffer, {"id": 1, "op": "tokenize", "text": "héllo"})
    write_frame(buffer, {"id": 2, "ok": True, "result": {"tokens": 3}})
    buffer.seek(0)
    assert read_frame(buffer) == {"id": 1, "op": "tokenize", "text": "héllo"}
    assert read_frame(buffer) == {"id": 2, "ok": True, "result": {"tokens": 3}}
    assert read_frame(buffer) is None  # end of stream: the other side is gone
    assert read_frame(io.BytesIO(b"\x00\x00\x00\x09{}")) is None  # cut in the middle
    with pytest.raises(ValueError, match="JSON object"):
        read_frame(io.BytesIO(b"\x00\x00\x00\x02[]"))


def test_exits_are_described_by_signal_name() -> None:
    assert describe_exit(-signal.SIGSEGV) == "died with SIGSEGV"
    assert describe_exit(-signal.SIGKILL) == "died with SIGKILL"
    assert describe_exit(3) == "exited with code 3"


def test_error_frames_become_threadline_errors() -> None:
    def frame(kind: str) -> dict[str, object]:
        return {"id": 0, "ok": False, "error": {"kind": kind, "message": "m"}}

    with pytest.raises(MissingExtraError):
        _result(frame("missing_extra"))
    with pytest.raises(ConfigError):
        _result(frame("config"))
    with pytest.raises(InvalidRequest) as invalid:  # the prompt does not fit: never retried
        _result(frame("invalid_request"))
    assert not invalid.value.retryable
    with pytest.raises(ModelError) as failed:
        _result(frame("failed"))
    assert failed.value.retryable
    assert _result({"id": 0, "ok": True, "result": {"tokens": 2}}) == {"tokens": 2}


# -- the real child ------------------------------------------------------------------------

if os.environ.get("CI", "").lower() != "true":
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs threadline[local] (llama-cpp-python)", allow_module_level=True)

from threadline.models.local import LocalModel  # noqa: E402

LONG = 100  # characters the grammar forces into each field: a generation of seconds


@tool
def file_report(
    a: Annotated[str, Field(min_length=LONG)],
    b: Annotated[str, Field(min_length=LONG)],
    c: Annotated[str, Field(min_length=LONG)],
    d: Annotated[str, Field(min_length=LONG)],
    e: Annotated[str, Field(min_length=LONG)],
    f: Annotated[str, Field(min_length=LONG)],
    g: Annotated[str, Field(min_length=LONG)],
    h: Annotated[str, Field(min_length=LONG)],
) -> str:
    """File a long report (eight long sections)."""
    return "filed"


def long_context() -> Context:
    """A context whose only grammar-valid answer is hundreds of tokens long."""
    schema = {
        "type": "object",
        "properties": {k: {"type": "string", "minLength": LONG} for k in "abcdefgh"},
        "required": list("abcdefgh"),
    }
    return Context(
        system="Answer with JSON.",
        messages=(Message("user", "Write eight long paragraphs about the sea."),),
        output_schema=schema,
        max_output_tokens=1200,
    )


def local(**kwargs: object) -> LocalModel:
    kwargs.setdefault("max_output_tokens", 1200)
    return LocalModel(**kwargs)  # type: ignore[arg-type]


async def wait_until_busy(model: LocalModel) -> None:
    """Until a generation is in flight in the model's child."""
    await asyncio.to_thread(_wait_for, lambda: model.process.busy)


def test_the_model_is_loaded_with_repacking_off_by_default() -> None:
    info = local().load()
    assert info["use_extra_bufts"] is False
    assert info["pid"] != os.getpid()
    assert info["llama_cpp"].startswith("0.3.")
    # OpenMP threads wait passively (spinning ones starve each other on shared CPUs)
    assert info["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")


def test_the_repack_setting_reaches_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadline.bootstrap import open_runtime
    from threadline.settings import Settings

    def model_of(settings: Settings) -> LocalModel:
        rt = open_runtime(
            settings.model_copy(
                update={"store": "memory://", "log": "off", "model": "local:smollm2"}
            )
        )
        assert isinstance(rt.model, LocalModel)
        return rt.model

    assert model_of(Settings()).process.config.repack is False
    monkeypatch.setenv("THREADLINE_LOCAL_REPACK", "1")
    assert model_of(Settings()).process.config.repack is True


def test_repacking_is_on_only_when_asked() -> None:
    model = local(repack=True, n_ctx=512)
    try:
        assert model.load()["use_extra_bufts"] is True
        assert model.count_tokens("deploy the latest tag") > 0
    finally:
        model.process.close()


async def test_the_child_is_reused_and_restarted_after_it_dies() -> None:
    model = local(max_output_tokens=48)
    context = Context(system="Be brief.", messages=(Message("user", "Say hi."),))
    first = model.load()["pid"]
    await model.request(context)
    assert model.process.pid == first  # reused across calls...
    assert LocalModel(max_output_tokens=48, grammar=False).process.pid == first  # ...and models
    os.kill(first, signal.SIGKILL)
    await asyncio.to_thread(_wait_gone, first)
    out = await model.request(context)  # a fresh child answers
    assert out.output_tokens > 0
    assert model.process.pid not in (None, first)


async def test_a_crash_mid_call_is_a_retryable_error_naming_the_signal() -> None:
    model = local()
    model.load()
    call = asyncio.create_task(model.request(long_context()))
    await wait_until_busy(model)
    victim = model.process.pid
    assert victim is not None
    os.kill(victim, signal.SIGSEGV)  # what a bad native kernel does
    with pytest.raises(ModelError, match="local model process died with SIGSEGV") as info:
        await call
    assert info.value.retryable
    assert model.count_tokens("still counting") > 0  # a new child serves the next request
    assert model.process.pid != victim


async def test_sigkill_mid_call_is_a_model_error_event_and_the_next_call_succeeds(
    calculator: object,
) -> None:
    model = local()
    first = model.load()["pid"]
    rt = Runtime(MemoryStore(), model=model)
    reporter = Agent("reporter", tools=[file_report])
    thread = await rt.launch(reporter, "file the quarterly report", advance=False)
    advancing = asyncio.create_task(rt.advance(thread, max_steps=1))
    await wait_until_busy(model)
    os.kill(first, signal.SIGKILL)
    thread = await advancing
    event = thread.events[-1]
    assert event.kind == "model_error", [e.kind for e in thread.events]
    assert event.retryable and "SIGKILL" in event.message
    assert event.model == "local:SmolLM2-135M-Instruct.Q4_1.gguf"

    calc = calculator.agent  # type: ignore[attr-defined]
    other = await rt.launch(calc, "add 2 and 3", advance=False)
    other = await rt.advance(other, max_steps=1)
    assert [e.kind for e in other.events][1:] == ["model_call", "tool_call"]
    assert model.process.pid not in (None, first)  # the runtime's process lives on


async def test_counting_tokens_does_not_wait_behind_a_generation() -> None:
    model = local()
    model.load()
    call = asyncio.create_task(model.request(long_context()))
    await wait_until_busy(model)
    assert model.count_tokens("deploy the latest tag") == 4
    assert model.process.busy  # answered while the generation was still running
    call.cancel()  # abandoning a call kills its child...
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.to_thread(_wait_idle, model)
    out = await model.request(Context(system="", messages=(Message("user", "hi"),)))
    assert out.text  # ...and the next call gets a fresh one


async def test_a_timeout_stops_the_generation_by_killing_the_child() -> None:
    model = local(timeout=0.3)
    pid = model.load()["pid"]
    with pytest.raises(ModelError, match="no answer within 0.3s") as info:
        await model.request(long_context())
    assert info.value.retryable
    await asyncio.to_thread(_wait_gone, pid)  # the generation really stopped


def test_the_runtimes_process_never_imports_llama_cpp(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, importlib.util, json, sys
        from threadline import MemoryStore, Runtime
        from threadline.models.registry import resolve_model

        spec = importlib.util.spec_from_file_location("calc", "examples/calculator/agent.py")
        calc = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(calc)
        rt = Runtime(MemoryStore(), model=resolve_model("local:smollm2?max_tokens=64"))
        async def one_call():
            thread = await rt.launch(calc.agent, "add 2 and 3", advance=False)
            return await rt.advance(thread, max_steps=1)

        thread = asyncio.run(one_call())
        kinds = [e.kind for e in thread.events]
        print(json.dumps({"kinds": kinds, "llama_cpp": "llama_cpp" in sys.modules}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["kinds"][1:] == ["model_call", "tool_call"], result
    assert result["llama_cpp"] is False


def _wait_for(condition: Callable[[], bool]) -> None:
    while not condition():
        time.sleep(0.01)


def _wait_gone(pid: int) -> None:
    """Until `pid` is no longer running (reaped by its parent, the runtime)."""

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    _wait_for(gone)


def _wait_idle(model: LocalModel) -> None:
    _wait_for(lambda: not model.process.busy)
