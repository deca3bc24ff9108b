"""Which channels run, from the environment (12-factor config).

    THREADLINE_CHANNELS=slack,email

Each named channel reads its own variables (`THREADLINE_SLACK_*`, `THREADLINE_EMAIL_*`;
docs/channels.md). Channels register through one table, the built-in ones too; a channel
is imported only when named, so a missing extra fails at start with the `pip install` that
fixes it, never at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from pydantic_settings import BaseSettings

from ..errors import ConfigError, MissingExtraError
from .base import Channel

__all__ = ["CHANNELS", "ChannelSettings", "open_channels", "parse_identities"]

CHANNELS: dict[str, str] = {
    "slack": "threadline.channels.slack:from_env",
    "email": "threadline.channels.email:from_env",
}
"""Channel name -> `module:function(agents) -> Channel` building it from the environment."""


def open_channels(spec: str, *, agents: Sequence[str]) -> dict[str, Channel]:
    """The channels named in `spec` (comma separated), built from their settings.

    Args:
        agents: the agents this process serves (a channel launches one of them).

    Raises:
        ConfigError: an unknown channel name, or a channel's settings are missing.
        MissingExtraError: the channel's libraries are not installed.
    """
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHANNELS]
    if unknown:
        raise ConfigError(
            f"unknown channel {unknown[0]!r} in THREADLINE_CHANNELS; known: "
            + ", ".join(sorted(CHANNELS))
        )
    out: dict[str, Channel] = {}
    for name in names:
        module_name, _, function = CHANNELS[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MissingExtraError("channels", exc.name or name) from None
        factory: Callable[[Sequence[str]], Channel] = getattr(module, function)
        out[name] = factory(agents)
    return out


def parse_identities(spec: str, variable: str) -> dict[str, str]:
    """`"U123:alice, U456:bob"` -> `{"U123": "alice", "U456": "bob"}` (identity -> name).

    Raises:
        ConfigError: an item is not `identity:name` (names the variable to fix).
    """
    out: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        identity, sep, name = item.rpartition(":")
        if not sep or not identity.strip() or not name.strip():
            raise ConfigError(f"{variable}: {item!r} must be identity:name (e.g. U0123ABC:alice)")
        out[identity.strip()] = name.strip()
    return out


class ChannelSettings(BaseSettings):
    """What every channel reads from its `THREADLINE_<CHANNEL>_*` variables (a subclass
    sets the `env_prefix` and adds its own): the agent a new conversation launches and who
    may answer. Errors name the variable to set."""

    agent: str | None = None
    responders: str = ""
    """`identity:name, ...` (`parse_identities`): who may approve and answer, as whom."""

    def _variable(self, field: str) -> str:
        return f"{self.model_config.get('env_prefix', '')}{field.upper()}"

    def launched_agent(self, agents: Sequence[str]) -> str:
        """`agent`, which must be served here; unset, the only agent served.

        Raises:
            ConfigError: `agent` is not among `agents`, or it is unset and they are several.
        """
        variable = self._variable("agent")
        if self.agent:
            if self.agent not in agents:
                raise ConfigError(
                    f"{variable}={self.agent} is not served here ({', '.join(agents)})"
                )
            return self.agent
        if len(agents) == 1:
            return agents[0]
        raise ConfigError(f"set {variable}: which agent a new conversation launches")

    def responder_names(self) -> dict[str, str]:
        """`responders` as identity -> name (`parse_identities`)."""
        return parse_identities(self.responders, self._variable("responders"))
