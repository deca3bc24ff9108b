"""Which MCP servers an agent uses, and the policy it holds over their tools. No I/O.

An MCP server describes its tools with hints (`readOnlyHint`, `destructiveHint`,
`idempotentHint`). Hints come from the server, which the agent does not necessarily trust,
so the agent's own rules always come first:

* approval: the first rule of `MCPServer.approval` whose pattern matches the tool's name
  decides; else `default_approval` if set; else the hints: a destructive tool (the MCP
  default for a tool that is not read-only) needs approval, a read-only or additive one
  does not. A hint can therefore never lower an approval the agent asked for.
* side effects: `flags` rules override the hints field by field; without hints a tool is
  taken to change the world and not to be idempotent (the MCP defaults).
* `trust_annotations=False` ignores the hints entirely: every tool then has side effects,
  is not idempotent and needs approval unless a rule says otherwise.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from ...errors import ConfigError
from ...resilience import ToolBreaker, ToolRetry
from ...tools import ApprovalPolicy

__all__ = ["MCPServer", "ToolFlags", "ToolPolicy", "schema_version"]


@dataclass(frozen=True, slots=True)
class ToolFlags:
    """An agent's override of a tool's side-effect flags (None: keep what the hints say)."""

    side_effects: bool | None = None
    idempotent: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """What the runtime will do with one remote tool."""

    side_effects: bool
    idempotent: bool
    approval: ApprovalPolicy


@dataclass(frozen=True, eq=False)
class MCPServer:
    """One MCP server and the agent's rules for its tools.

    Give either `command` (stdio: the server is started as a child process) or `url`
    (streamable HTTP).

    Args:
        name: how the agent refers to the server (logs, the lock).
        command: argv of a stdio server, e.g. `["python", "files_server.py"]`.
        env: extra environment for a stdio server (the child otherwise gets only a safe
            minimum: PATH, HOME, ...). `env_from` names variables copied from this process.
        url: endpoint of a streamable HTTP server, e.g. `http://127.0.0.1:9000/mcp`.
        headers: literal HTTP headers. `headers_from_env` maps a header to the environment
            variable holding its value, read when connecting (secrets stay out of code).
        approval: tool name or glob pattern -> `never` / `always` / predicate on the
            arguments dict. The first matching rule wins.
        default_approval: for tools no rule matches; None derives it from the hints.
        flags: tool name or glob -> `ToolFlags` overriding the hints.
        trust_annotations: read the server's hints at all (see the module docstring).
        include: glob patterns of the tools to use (default: all).
        prefix: prepended to every tool name the model sees (e.g. `files.`).
        timeout: seconds a call may take before its outcome counts as unknown.
        connect_timeout: seconds to start the server and finish the handshake.
        retry / breaker: the server's tools' retries and circuit breaker (see
            `threadline.retries`): a server that cannot be reached, or did not answer a
            call that is safe to send again, is a `RetryableToolError`.
    """

    name: str
    command: Sequence[str] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    env_from: Sequence[str] = ()
    cwd: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_from_env: Mapping[str, str] = field(default_factory=dict)
    approval: Mapping[str, ApprovalPolicy] = field(default_factory=dict)
    default_approval: ApprovalPolicy | None = None
    flags: Mapping[str, ToolFlags] = field(default_factory=dict)
    trust_annotations: bool = True
    include: Sequence[str] = ("*",)
    prefix: str = ""
    timeout: float = 30.0
    connect_timeout: float = 20.0
    retry: ToolRetry = field(default_factory=ToolRetry)
    breaker: ToolBreaker | None = field(default_factory=ToolBreaker)
    # Live state beside the configuration: one connection per event loop, and the agents
    # kept up to date on `tools/list_changed` (see client.follow).
    _connections: WeakKeyDictionary[Any, Any] = field(
        default_factory=WeakKeyDictionary, init=False, repr=False
    )
    _followers: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            object.__setattr__(self, "command", tuple(shlex.split(self.command)))
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                f"MCP server {self.name!r}: give exactly one of command= (stdio) or url= (HTTP)"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"MCP server {self.name!r}: url must be http(s)://, not {self.url}")
        for pattern, policy in self.approval.items():
            if policy not in ("never", "always") and not callable(policy):
                raise ConfigError(
                    f"MCP server {self.name!r}: approval for {pattern!r} must be "
                    "'never', 'always' or a predicate"
                )

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    @property
    def source(self) -> str:
        """Where the tools come from, as recorded in the lock (no secrets: no env, headers)."""
        return f"stdio:{shlex.join(self.command)}" if self.command else f"http:{self.url}"

    def child_env(self) -> dict[str, str]:
        env = {n: os.environ[n] for n in self.env_from if n in os.environ}
        env.update(self.env)
        return env

    def http_headers(self) -> dict[str, str]:
        """The headers to send, reading `headers_from_env` now. Raises ConfigError naming a
        missing variable."""
        out = dict(self.headers)
        for header, variable in self.headers_from_env.items():
            value = os.environ.get(variable)
            if value is None:
                raise ConfigError(
                    f"MCP server {self.name!r}: header {header} comes from ${variable}, "
                    "which is not set"
                )
            out[header] = value
        return out

    def wants(self, remote_name: str) -> bool:
        return any(fnmatch.fnmatchcase(remote_name, p) for p in self.include)

    def policy(self, name: str, annotations: Mapping[str, Any] | None) -> ToolPolicy:
        """The agent's policy for tool `name` (as the model sees it) given the server's
        hints (wire names: `readOnlyHint`, ...)."""
        hints = dict(annotations or {}) if self.trust_annotations else {}
        read_only = hints.get("readOnlyHint") is True
        destructive = not read_only and hints.get("destructiveHint") is not False
        side_effects = not read_only
        idempotent = read_only or hints.get("idempotentHint") is True
        for pattern, flags in self.flags.items():
            if _matches(name, pattern):
                if flags.side_effects is not None:
                    side_effects = flags.side_effects
                if flags.idempotent is not None:
                    idempotent = flags.idempotent
                break
        approval: ApprovalPolicy | None = None
        for pattern, rule in self.approval.items():
            if _matches(name, pattern):
                approval = rule
                break
        if approval is None:
            approval = self.default_approval
        if approval is None:
            approval = "always" if destructive else "never"
        return ToolPolicy(side_effects, idempotent, approval)


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def schema_version(input_schema: Mapping[str, Any], description: str) -> str:
    """A remote tool's version: 10 hex digits of the sha256 of its schema and description.

    A server that changes a tool's schema or description therefore publishes a new
    version, and threads that called the old one keep naming it.
    """
    blob = json.dumps(
        {"description": description, "inputSchema": input_schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]
