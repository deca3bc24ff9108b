"""Build and release (12-factor build/release/run): `threadline.lock`.

`threadline build` validates every agent it is given and writes the lock:

* each prompt renders with the sample variables of its front matter (StrictUndefined, so a
  variable the template uses but the samples lack fails the build), and the tools the
  front matter lists exist on the agent;
* each tool's JSON Schema is a valid schema (checked with `jsonschema` when installed) and
  the intent schema of the agent builds;
* each model pin (`Agent.model`, the front matter's `model`) looks like `provider:model`.

The lock is JSON, sorted, without timestamps (the same sources give the same bytes)::

    {"version": 1, "git_commit": "...",
     "agents": {"calculator": {
        "ref": "examples/calculator/agent.py:agent",
        "prompt": {"file": "examples/calculator/prompt.md.j2", "name": "calculator",
                   "version": "1.1.0", "sha256": "..."},
        "instructions_sha256": null, "model": "openai:gpt-4.1-mini",
        "tools": {"add@1": {"file": "examples/calculator/agent.py", "sha256": "..."}}}}}

At release (`THREADLINE_RELEASE=1`, or `--locked`), `check_lock` compares the running
agents against the lock and raises `LockMismatch` naming the first file whose prompt or
tool schema changed, so a release never runs a prompt nobody built.

Tools discovered from MCP servers at start-up are pinned too, under the agent's `"mcp"`
key (`remote_pins`): server, source (the stdio command or URL), remote tool name, version
and schema hash. A server that changed a tool's schema or description since the build is
refused at release, naming the server and the tool (`check_remote_pins`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ConfigError, LockMismatch, PromptError, ThreadlineError
from .judge import Judge
from .prompts import Prompt, prompt_for

if TYPE_CHECKING:
    from .agent import Agent
    from .settings import Settings
    from .tools import Tool

__all__ = [
    "LOCK_VERSION",
    "AgentReport",
    "RemoteTool",
    "build_lock",
    "check_lock",
    "check_remote_pins",
    "read_lock",
    "remote_pins",
    "validate_agent",
    "write_lock",
]

LOCK_VERSION = 1
_MODEL_PIN = re.compile(r"[a-z][a-z0-9_\-]*:\S+")


@runtime_checkable
class RemoteTool(Protocol):
    """A tool whose code lives on a remote server (an MCP tool): the lock pins it."""

    @property
    def remote_pin(self) -> dict[str, str]: ...


class AgentReport:
    """What `validate_agent` found: problems (build fails) and the lock entry."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[str] = []
        self.entry: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return not self.problems


def _rel(path: Path | str | None, root: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def _tool_file(tool: Tool) -> str | None:
    target = tool.fn if tool.fn is not None else tool.args_model
    try:
        return inspect.getsourcefile(target)
    except TypeError:
        return None


def _check_schema(schema: Mapping[str, Any]) -> str | None:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:  # optional: without it we only check the shape
        return None if schema.get("type") == "object" else "schema must be an object schema"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"invalid JSON Schema: {exc.message}"
    return None


def validate_agent(agent: Agent, ref: str | None, root: Path) -> AgentReport:
    """Validate one agent's prompt, tool schemas and model pins; build its lock entry."""
    report = AgentReport(agent.name)
    tool_names = [t.name for t in agent.visible_tools()]
    prompt: Prompt | None = None
    try:
        prompt = prompt_for(agent)
    except (PromptError, ConfigError) as exc:
        report.problems.append(str(exc))
    if prompt is not None:
        try:
            prompt.render_sample(
                {
                    "agent": agent.name,
                    "tools": [
                        {"name": t.name, "description": t.description}
                        for t in agent.visible_tools()
                    ],
                    **dict(agent.context.prompt_vars),
                }
            )
        except PromptError as exc:
            report.problems.append(str(exc))
        for name in prompt.tools or ():
            if name not in tool_names:
                report.problems.append(
                    f"prompt {prompt.path or prompt.name} lists tool "
                    f"{name!r}, which agent {agent.name} does not have"
                )
        if prompt.model and not _MODEL_PIN.fullmatch(prompt.model):
            report.problems.append(
                f"prompt {prompt.path or prompt.name}: model "
                f"{prompt.model!r} must look like provider:model"
            )
    model_id = getattr(agent.model, "model_id", None) if agent.model is not None else None
    if (
        model_id is not None
        and not _MODEL_PIN.fullmatch(str(model_id))
        and not str(model_id).startswith(("scripted", "function", "replay"))
    ):
        report.problems.append(
            f"agent {agent.name}: pinned model id {model_id!r} must look like provider:model"
        )
    tools: dict[str, Any] = {}
    for t in agent.registry:
        try:
            schema = t.schema()
            json.dumps(schema)
        except (TypeError, ValueError, ThreadlineError) as exc:
            report.problems.append(f"tool {t.key}: schema cannot be built: {exc}")
            continue
        problem = _check_schema(schema)
        if problem:
            report.problems.append(f"tool {t.key}: {problem}")
        where = t.remote_pin["source"] if isinstance(t, RemoteTool) else None
        tools[t.key] = {"sha256": t.schema_hash(), "file": where or _rel(_tool_file(t), root)}
    try:
        agent.output_schema()
    except Exception as exc:
        report.problems.append(f"agent {agent.name}: intent schema cannot be built: {exc}")
    pins = remote_pins(agent)
    judges = _judge_prompts(agent, root)
    report.entry = {
        **({"mcp": pins} if pins else {}),
        **({"judges": judges} if judges else {}),
        "ref": ref,
        "prompt": None
        if prompt is None
        else {
            "file": _rel(prompt.path, root),
            "name": prompt.name,
            "version": prompt.version,
            "sha256": prompt.sha256,
        },
        "instructions_sha256": None
        if prompt is not None
        else hashlib.sha256(agent.instructions.encode()).hexdigest(),
        "model": (prompt.model if prompt is not None and prompt.model else model_id),
        "tools": tools,
    }
    return report


def _judge_prompts(agent: Agent, root: Path) -> dict[str, dict[str, Any]]:
    """The prompt of each of the agent's judges (dispatch guards asking a model), by the
    judge's name: a release refuses a judge whose template changed, as it does the
    agent's own prompt."""
    return {
        g.name: {
            "file": _rel(g.prompt.path, root),
            "name": g.prompt.name,
            "version": g.prompt.version,
            "sha256": g.prompt.sha256,
        }
        for g in agent.dispatch_guards
        if isinstance(g, Judge)
    }


def git_commit(root: Path) -> str | None:
    """The checked-out commit of `root`, or None outside git (or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def build_lock(
    agents: Iterable[tuple[Agent, str | None]], root: Path
) -> tuple[dict[str, Any], list[AgentReport]]:
    """Validate every agent and assemble the lock. The lock is only valid when every
    report is `ok`; callers must not write it otherwise."""
    reports = [validate_agent(agent, ref, root) for agent, ref in agents]
    lock = {
        "version": LOCK_VERSION,
        "git_commit": git_commit(root) or git_commit(Path.cwd()),
        "agents": {r.name: r.entry for r in sorted(reports, key=lambda r: r.name)},
    }
    return lock, reports


def write_lock(path: Path, lock: Mapping[str, Any]) -> None:
    """Write atomically (a temp file renamed over the old lock)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_lock(path: Path) -> dict[str, Any]:
    """Parse a lock file. Raises ConfigError when it is missing or not a lock."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"{path} not found; run `threadline build` first") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); run `threadline build`") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != LOCK_VERSION
        or not isinstance(data.get("agents"), dict)
    ):
        raise ConfigError(f"{path} is not a threadline lock (version {LOCK_VERSION})")
    return data


def check_lock(
    settings: Settings, agents: Iterable[Agent], *, locked: bool = False, root: Path | None = None
) -> None:
    """Refuse to run agents whose prompts or tool schemas differ from the lock.

    Does nothing unless `settings.release` or `locked`. Raises `LockMismatch` naming the
    changed file (the prompt file, or the file defining the tool or agent), or
    `ConfigError` when the lock is missing.
    """
    if not (settings.release or locked):
        return
    path = Path(settings.lock_file)
    base = root or path.resolve().parent
    lock = read_lock(path)
    for agent in agents:
        entry = lock["agents"].get(agent.name)
        if not isinstance(entry, dict):
            raise LockMismatch(f"agent {agent.name} (not in {path})", "(absent)", "(present)")
        actual = validate_agent(agent, entry.get("ref"), base).entry
        _compare(agent, entry, actual, path)


def _compare(agent: Agent, locked: dict[str, Any], actual: dict[str, Any], lock: Path) -> None:
    check_remote_pins(agent, locked.get("mcp") or {}, actual.get("mcp") or {})
    lj: dict[str, Any] = locked.get("judges") or {}
    aj: dict[str, Any] = actual.get("judges") or {}
    for name in sorted(set(lj) | set(aj)):
        old, new = lj.get(name) or {}, aj.get(name) or {}
        if old.get("sha256") != new.get("sha256"):
            where = new.get("file") or old.get("file") or f"agent {agent.name}"
            raise LockMismatch(
                f"{where} (prompt of judge {name})",
                old.get("sha256", "(absent)"),
                new.get("sha256", "(absent)"),
            )
    lp, ap = locked.get("prompt"), actual.get("prompt")
    if (lp is None) != (ap is None):
        where = (ap or lp or {}).get("file") or f"agent {agent.name}"
        raise LockMismatch(
            str(where),
            (lp or {}).get("sha256", "(no prompt file)"),
            (ap or {}).get("sha256", "(no prompt file)"),
        )
    if lp is not None and ap is not None and lp.get("sha256") != ap.get("sha256"):
        raise LockMismatch(
            str(ap.get("file") or lp.get("file")), str(lp.get("sha256")), str(ap.get("sha256"))
        )
    if locked.get("instructions_sha256") != actual.get("instructions_sha256"):
        raise LockMismatch(
            f"{locked.get('ref') or agent.name} (instructions of agent {agent.name})",
            str(locked.get("instructions_sha256")),
            str(actual.get("instructions_sha256")),
        )
    lt: dict[str, Any] = locked.get("tools") or {}
    at: dict[str, Any] = actual.get("tools") or {}
    for key in sorted(set(lt) | set(at)):
        old, new = lt.get(key), at.get(key)
        if old is None or new is None or old.get("sha256") != new.get("sha256"):
            where = (new or old or {}).get("file") or f"agent {agent.name}"
            raise LockMismatch(
                f"{where} (tool {key})",
                (old or {}).get("sha256", "(absent)"),
                (new or {}).get("sha256", "(absent)"),
            )


# -- MCP tools: pins of remote schemas -------------------------------------------------------


def remote_pins(agent: Agent) -> dict[str, dict[str, str]]:
    """`name@version` -> pin of every remote (MCP) tool the agent has discovered."""
    tools: list[Tool] = list(agent.registry)
    return {t.key: dict(t.remote_pin) for t in tools if isinstance(t, RemoteTool)}


def check_remote_pins(
    agent: Agent, locked: Mapping[str, Any], actual: Mapping[str, Mapping[str, str]]
) -> None:
    """Raise `LockMismatch` if a pinned MCP tool is now published with another schema or
    description, or is gone, or if the servers publish a tool the build never saw."""

    def by_tool(pins: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {
            (str(p.get("server")), str(p.get("tool"))): p
            for p in pins.values()
            if isinstance(p, Mapping)
        }

    old, new = by_tool(locked), by_tool(actual)
    for server, tool in sorted(set(old) | set(new)):
        was, now = old.get((server, tool)), new.get((server, tool))
        if (
            was is not None
            and now is not None
            and was.get("schema_sha256") == now.get("schema_sha256")
        ):
            continue
        where = (now or was or {}).get("source") or server
        state = "new schema" if was and now else ("no longer published" if was else "not built")
        raise LockMismatch(
            f"MCP server {server} ({where}): tool {tool} ({state}, agent {agent.name})",
            str((was or {}).get("schema_sha256", "(absent)")),
            str((now or {}).get("schema_sha256", "(absent)")),
        )
