"""Assemble a `Runtime` from settings: the store, the model, the agents, the event log.

Shared by the CLI, the server and workers, so each is a thin adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

from pydantic import SecretStr

from .agent import Agent
from .context.redaction import Redactor
from .errors import ConfigError
from .loader import load_agent
from .lockfile import check_lock
from .models.base import Model
from .observability import JsonEventLog, open_sink
from .observability.telemetry import telemetry_observers
from .ratelimits import RateLimits
from .runtime import Observer, Runtime
from .settings import Settings
from .stores import open_store

__all__ = ["DEFAULT_AGENT_REFS", "Loaded", "chosen_agents", "load_agents", "open_runtime"]

DEFAULT_AGENT_REFS = (
    "examples/calculator/agent.py:agent",
    "examples/deploybot/agent.py:agent",
    "agent.py:agent",
)
"""Used when no agent is named (paths relative to the working directory): the examples in
this project's folder, or the agent of a project made by `threadline new`."""


Loaded: TypeAlias = dict[str, tuple[Agent, str]]
"""Agents loaded from references: name -> (agent, the reference it was loaded from)."""


def load_agents(refs: Iterable[str]) -> Loaded:
    """name -> (agent, reference) for each reference."""
    out: Loaded = {}
    for ref in refs:
        agent = load_agent(ref)
        if agent.name in out and out[agent.name][0] is not agent:
            raise ConfigError(f"two agents are named {agent.name!r} ({out[agent.name][1]}, {ref})")
        out[agent.name] = (agent, ref)
    return out


def default_agent_refs() -> list[str]:
    return [r for r in DEFAULT_AGENT_REFS if Path(r.rsplit(":", 1)[0]).is_file()]


def chosen_agents(refs: Sequence[str] | None) -> Loaded:
    """The agents `refs` name, else those of `DEFAULT_AGENT_REFS` found here, with the
    reference each was loaded from (`open_runtime` records it on the threads it starts).

    Raises:
        ConfigError: none named and none found.
    """
    chosen = list(refs or ()) or default_agent_refs()
    if not chosen:
        raise ConfigError(
            "no agents: pass --agent path.py:name (or run from the project folder, "
            "where the example agents live)"
        )
    return load_agents(chosen)


def open_runtime(
    settings: Settings,
    agents: Sequence[Agent] | Loaded = (),
    *,
    model: Model | None = None,
    observers: Sequence[Observer] = (),
    with_model: bool = True,
) -> Runtime:
    """A runtime on the configured store and model, logging events to the configured sink,
    and exporting traces and metrics when telemetry is enabled (`observability.telemetry`),
    keeping the configured rate limits (`THREADLINE_RATE_LIMITS`).

    `agents` given as loaded from references (`load_agents`, `chosen_agents`): every
    thread the runtime starts for one of them records its reference (`Runtime.add_agent`),
    whichever entry point started it (CLI, HTTP, MCP, channels, cron), so later commands
    find the agent's code without `--agent`.

    `with_model=False` skips building the model (commands that never call one).
    """
    refs = {n: ref for n, (_, ref) in agents.items()} if isinstance(agents, Mapping) else {}
    plain = [a for a, _ in agents.values()] if isinstance(agents, Mapping) else agents
    if model is None and with_model:
        from .models.registry import resolve_model

        model = resolve_model(settings.model, local_repack=settings.local_repack)
    # Release (12-factor): refuse prompts / tool schemas that differ from threadline.lock.
    check_lock(settings, plain)
    sink = open_sink(settings.log)
    all_observers = list(observers)
    # Mask known secret shapes and the values of this process's own secret settings.
    secrets = [v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)]
    redact = Redactor(values=secrets).redact
    if sink is not None:
        all_observers.insert(0, JsonEventLog(sink, redact=redact))
    all_observers += telemetry_observers(settings, redact=redact)
    runtime = Runtime(
        open_store(settings.store),
        agents=plain,
        model=model,
        observers=all_observers,
        rate_limits=RateLimits.parse(settings.rate_limits),
    )
    for name, ref in refs.items():
        runtime.add_agent(runtime.agent(name), ref=ref)
    return runtime
