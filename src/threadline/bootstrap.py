"""Assemble a `Runtime` from settings: the store, the model, the agents, the event log.

Shared by the CLI, the server and workers, so each is a thin adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

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

__all__ = ["DEFAULT_AGENT_REFS", "chosen_agents", "load_agents", "open_runtime"]

DEFAULT_AGENT_REFS = (
    "examples/calculator/agent.py:agent",
    "examples/deploybot/agent.py:agent",
    "agent.py:agent",
)
"""Used when no agent is named (paths relative to the working directory): the examples in
this project's folder, or the agent of a project made by `threadline new`."""


def load_agents(refs: Iterable[str]) -> dict[str, tuple[Agent, str]]:
    """name -> (agent, reference) for each reference."""
    out: dict[str, tuple[Agent, str]] = {}
    for ref in refs:
        agent = load_agent(ref)
        if agent.name in out and out[agent.name][0] is not agent:
            raise ConfigError(f"two agents are named {agent.name!r} ({out[agent.name][1]}, {ref})")
        out[agent.name] = (agent, ref)
    return out


def default_agent_refs() -> list[str]:
    return [r for r in DEFAULT_AGENT_REFS if Path(r.rsplit(":", 1)[0]).is_file()]


def chosen_agents(refs: Sequence[str] | None) -> list[Agent]:
    """The agents `refs` name, else those of `DEFAULT_AGENT_REFS` found here.

    Raises:
        ConfigError: none named and none found.
    """
    chosen = list(refs or ()) or default_agent_refs()
    if not chosen:
        raise ConfigError(
            "no agents: pass --agent path.py:name (or run from the project folder, "
            "where the example agents live)"
        )
    return [a for a, _ in load_agents(chosen).values()]


def open_runtime(
    settings: Settings,
    agents: Sequence[Agent] = (),
    *,
    model: Model | None = None,
    observers: Sequence[Observer] = (),
    with_model: bool = True,
) -> Runtime:
    """A runtime on the configured store and model, logging events to the configured sink,
    and exporting traces and metrics when telemetry is enabled (`observability.telemetry`),
    keeping the configured rate limits (`THREADLINE_RATE_LIMITS`).

    `with_model=False` skips building the model (commands that never call one).
    """
    if model is None and with_model:
        from .models.registry import resolve_model

        model = resolve_model(settings.model, local_repack=settings.local_repack)
    # Release (12-factor): refuse prompts / tool schemas that differ from threadline.lock.
    check_lock(settings, agents)
    sink = open_sink(settings.log)
    all_observers = list(observers)
    # Mask known secret shapes and the values of this process's own secret settings.
    secrets = [v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)]
    redact = Redactor(values=secrets).redact
    if sink is not None:
        all_observers.insert(0, JsonEventLog(sink, redact=redact))
    all_observers += telemetry_observers(settings, redact=redact)
    return Runtime(
        open_store(settings.store),
        agents=agents,
        model=model,
        observers=all_observers,
        rate_limits=RateLimits.parse(settings.rate_limits),
    )
