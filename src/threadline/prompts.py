"""Prompt templates under version control (factor 2).

A prompt is a Jinja2 file with a small YAML front matter::

    ---
    name: calculator
    version: 1.1.0
    model: openai:gpt-4.1-mini      # the model it was written and tested for
    tools: [add, subtract, multiply, divide]
    variables:                       # sample values: `threadline build` renders with them
      user_name: Ada
    ---
    You are a calculator for {{ user_name }}. ...

Templates render with `StrictUndefined`: a variable nobody supplied is a `PromptError`
naming the variable and the file, never an empty string. At run time the variables are
`agent` (its name), `tools` (name and description of each), `thread` (id and metadata),
then `ContextSettings.prompt_vars`, then the thread's `metadata["prompt_vars"]`.

An agent names its prompt with `Agent(prompt="path/to/prompt.md.j2")` or
`Agent(prompt=Prompt.load(path))`. `renderer_for(agent)` loads it (once: a runtime builds
one renderer per agent when the agent joins it, so a missing or malformed prompt fails at
start).
`Prompt.sha256` (of the whole file) is what `model_call` events and `threadline.lock`
record.

Regression cases live next to the prompt, in `<prompt file stem>.cases.yaml` (see
`load_cases`): an input thread and the intent the model must choose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context.renderer import Renderer
from .errors import ConfigError, PromptError
from .events import InvalidOutput, Thread, ToolCall, ToolResult, UserMessage
from .models.base import ToolSpec
from .reducer import interpret

if TYPE_CHECKING:
    import jinja2

    from .agent import Agent

__all__ = [
    "CaseResult",
    "Prompt",
    "PromptCase",
    "case_thread",
    "load_cases",
    "prompt_for",
    "renderer_for",
    "run_cases",
]

_FENCE = "---"


def _split_front_matter(text: str, path: str) -> tuple[dict[str, Any], str]:
    import yaml

    if not text.startswith(_FENCE):
        return {}, text
    end = text.find(f"\n{_FENCE}", len(_FENCE))
    if end < 0:
        raise PromptError(f"{path}: front matter starts with '---' but never ends")
    head = text[len(_FENCE) : end]
    body = text[end + len(_FENCE) + 1 :]
    if body.startswith("\n"):
        body = body[1:]
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise PromptError(f"{path}: front matter must be a mapping")
    return meta, body


@dataclass(frozen=True, eq=False)
class Prompt:
    """A parsed prompt template.

    Attributes:
        name / version / model / tools: from the front matter (`name` defaults to the
            file name; `model` and `tools` may be None).
        variables: sample values for `threadline build` and `prompts test`.
        source: the template body (after the front matter).
        sha256: hash of the whole file, front matter included.
        path: where it was loaded from (None for prompts built from a string).
    """

    name: str
    version: str
    source: str
    sha256: str
    model: str | None = None
    tools: tuple[str, ...] | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    _template: Any = field(default=None, repr=False)

    @classmethod
    def from_text(cls, text: str, *, path: str | Path | None = None) -> Prompt:
        """Parse a prompt file's text. Raises PromptError on bad front matter or syntax."""
        label = str(path) if path else "<prompt>"
        meta, body = _split_front_matter(text, label)
        unknown = set(meta) - {"name", "version", "model", "tools", "variables", "description"}
        if unknown:
            raise PromptError(f"{label}: unknown front matter keys: {', '.join(sorted(unknown))}")
        tools = meta.get("tools")
        if tools is not None and (
            not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)
        ):
            raise PromptError(f"{label}: 'tools' must be a list of tool names")
        variables = meta.get("variables") or {}
        if not isinstance(variables, dict):
            raise PromptError(f"{label}: 'variables' must be a mapping of sample values")
        default_name = Path(path).name.split(".")[0] if path else "prompt"
        prompt = cls(
            name=str(meta.get("name") or default_name),
            version=str(meta.get("version", "0")),
            source=body,
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            model=str(meta["model"]) if meta.get("model") else None,
            tools=tuple(tools) if tools is not None else None,
            variables=dict(variables),
            path=Path(path) if path else None,
        )
        object.__setattr__(prompt, "_template", _compile(body, label))
        return prompt

    @classmethod
    def load(cls, path: str | Path) -> Prompt:
        """Read and parse a prompt file. Raises PromptError if it is missing or malformed."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptError(f"prompt file {p} cannot be read: {exc.strerror or exc}") from None
        return cls.from_text(text, path=p)

    def render(self, variables: Mapping[str, Any] | None = None) -> str:
        """The prompt text. Raises PromptError naming a missing variable."""
        import jinja2

        try:
            return str(self._template.render(**dict(variables or {})))
        except jinja2.UndefinedError as exc:
            raise PromptError(
                f"prompt {self.name} ({self.path or 'inline'}): {exc.message}; "
                "pass it in ContextSettings.prompt_vars, the thread's "
                "metadata['prompt_vars'] or the front matter's variables"
            ) from None
        except jinja2.TemplateError as exc:
            raise PromptError(f"prompt {self.name}: {exc}") from None

    def render_sample(self, extra: Mapping[str, Any] | None = None) -> str:
        """Render with the front matter's sample variables (what `build` checks)."""
        sample: dict[str, Any] = {
            "agent": self.name,
            "tools": [],
            "thread": {"id": "sample", "metadata": {}},
        }
        sample.update(extra or {})
        sample.update(self.variables)
        return self.render(sample)

    @property
    def cases_path(self) -> Path | None:
        """Where this prompt's regression cases live (next to the file)."""
        if self.path is None:
            return None
        return self.path.with_name(self.path.name.split(".")[0] + ".cases.yaml")


def _compile(body: str, label: str) -> jinja2.Template:
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # noqa: S701 - prompts are plain text for a model, not HTML
    )
    try:
        return env.from_string(body)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{label}:{exc.lineno}: template syntax error: {exc.message}") from None


def prompt_for(agent: Agent) -> Prompt | None:
    """The agent's prompt, loaded from its file when it names a path.

    Raises:
        PromptError: the file is missing or malformed.
        ConfigError: `agent.prompt` is neither a path nor a `Prompt`.
    """
    spec = agent.prompt
    if spec is None:
        return None
    if isinstance(spec, Prompt):
        return spec
    if isinstance(spec, str | Path):
        return Prompt.load(spec)
    raise ConfigError(f"agent {agent.name}: prompt must be a path or a threadline.prompts.Prompt")


def renderer_for(agent: Agent) -> Renderer:
    """A `Renderer` for `agent`: its prompt loaded and compiled, its tools, output schema
    and `ContextSettings` (the runtime builds one per agent, when the agent joins it).

    Raises:
        PromptError: the prompt file is missing or malformed.
        ConfigError: `agent.prompt` is neither a path nor a `Prompt`.
    """
    custom = agent.renderer
    return Renderer(
        name=agent.name,
        instructions=agent.instructions,
        prompt=prompt_for(agent),
        tools=[ToolSpec(t.name, t.description, t.schema()) for t in agent.visible_tools()],
        output_schema=agent.output_schema(),
        settings=agent.context,
        custom=(lambda thread: custom(agent, thread)) if custom is not None else None,
    )


@dataclass(frozen=True)
class PromptCase:
    """One regression case: a conversation and the intent the model must answer with.

    Attributes:
        name: shown in the report.
        messages: the thread's inputs, in order: `{"user": text}`, or a tool call and its
            result `{"call": tool, "arguments": {...}, "result": ...}`.
        expect_intent: the tool name the model must choose.
        expect_arguments: argument values that must match (a subset; omitted = any).
        prompt_vars: extra template variables for this case.
    """

    name: str
    messages: tuple[dict[str, Any], ...]
    expect_intent: str
    expect_arguments: dict[str, Any] = field(default_factory=dict)
    prompt_vars: dict[str, Any] = field(default_factory=dict)


def load_cases(path: str | Path) -> list[PromptCase]:
    """Parse a `.cases.yaml` file: a list of `{name, thread, expect: {intent, arguments}}`.

    Raises PromptError with the case number when a case is malformed.
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptError(f"cases file {p} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PromptError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, list):
        raise PromptError(f"{p}: expected a list of cases")
    cases = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise PromptError(f"{p}: case {n} must be a mapping")
        thread = item.get("thread")
        expect = item.get("expect")
        if isinstance(thread, str):
            thread = [{"user": thread}]
        if (
            not isinstance(thread, list)
            or not thread
            or not isinstance(expect, dict)
            or not isinstance(expect.get("intent"), str)
        ):
            raise PromptError(
                f"{p}: case {n} needs 'thread' (a message or a list) and 'expect: {{intent: ...}}'"
            )
        for step in thread:
            if not isinstance(step, dict) or not ({"user"} <= set(step) or "call" in step):
                raise PromptError(
                    f"{p}: case {n}: each thread step is {{user: text}} or "
                    "{call: tool, arguments: {...}, result: ...}"
                )
        cases.append(
            PromptCase(
                name=str(item.get("name") or f"case {n}"),
                messages=tuple(thread),
                expect_intent=expect["intent"],
                expect_arguments=dict(expect.get("arguments") or {}),
                prompt_vars=dict(item.get("prompt_vars") or {}),
            )
        )
    return cases


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one regression case."""

    case: str
    expected: str
    got: str
    passed: bool


def case_thread(agent: Agent, case: PromptCase) -> Any:
    """The input thread of a regression case (fixed timestamps: a pure function of it)."""
    at = datetime(2024, 1, 1, tzinfo=UTC)
    thread = Thread(
        f"case-{case.name}", agent.name, metadata={"prompt_vars": dict(case.prompt_vars)}
    )
    for step in case.messages:
        if "user" in step:
            thread.append_new(UserMessage, at=at, text=str(step["user"]))
            continue
        name = str(step["call"])
        tool = agent.registry.get(name)
        version = tool.version if tool is not None else "1"
        call_id = f"c{thread.next_seq}"
        arguments = dict(step.get("arguments") or {})
        thread.append_new(
            ToolCall, at=at, call_id=call_id, tool=name, version=version, arguments=arguments
        )
        thread.append_new(ToolResult, at=at, call_id=call_id, tool=name, result=step.get("result"))
    return thread


async def run_cases(
    agent: Agent, model: Any, cases: list[PromptCase] | None = None
) -> list[CaseResult]:
    """Run the agent's prompt regression cases (from the file next to its prompt, unless
    `cases` is given) against `model`: render each input thread, ask the model once, and
    compare the intent it chose (and any expected argument values)."""
    renderer = renderer_for(agent)
    renderer.bind(model)
    if cases is None:
        prompt = renderer.prompt
        path = prompt.cases_path if isinstance(prompt, Prompt) else None
        if path is None or not path.is_file():
            return []
        cases = load_cases(path)
    results = []
    for case in cases:
        thread = case_thread(agent, case)
        context = renderer.context(thread)
        out = await model.request(context)
        events = interpret(
            agent, out.text, out.tool_calls, seq=thread.next_seq, at=thread.events[-1].at
        )
        first = events[0]
        if not isinstance(first, ToolCall):
            got = f"invalid: {first.reason if isinstance(first, InvalidOutput) else first.kind}"
            passed = False
        else:
            args = first.arguments
            got = f"{first.tool} {json.dumps(args, ensure_ascii=False)}"
            passed = first.tool == case.expect_intent and all(
                args.get(k) == v for k, v in case.expect_arguments.items()
            )
        expected = case.expect_intent + (
            f" {json.dumps(case.expect_arguments, ensure_ascii=False)}"
            if case.expect_arguments
            else ""
        )
        results.append(CaseResult(case.name, expected, got, passed))
    return results
