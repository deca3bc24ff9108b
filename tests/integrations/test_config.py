"""integrations/mcp/config.py: an MCP server's configuration and the agent's policy over its
tools: the agent's rules first, the server's hints only where no rule speaks, and never a
hint that lowers an approval the agent asked for."""

from __future__ import annotations

import pytest

from threadline.errors import ConfigError
from threadline.integrations.mcp.config import MCPServer, ToolFlags, schema_version

READ_ONLY = {"readOnlyHint": True}
ADDITIVE = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True}


def test_the_agents_rules_come_before_the_servers_hints() -> None:
    server = MCPServer(
        "files",
        command="python files_server.py --root /srv",
        approval={"files.delete_*": "always", "files.stat": "never"},
        flags={"files.touch": ToolFlags(side_effects=True, idempotent=True)},
    )
    assert server.command == ("python", "files_server.py", "--root", "/srv")
    # A read-only hint cannot lower an approval the agent asked for.
    delete = server.policy("files.delete_tree", READ_ONLY)
    assert (delete.approval, delete.side_effects) == ("always", False)
    # Hints decide where no rule speaks: read-only, additive, or (the MCP default) neither.
    assert server.policy("files.read", READ_ONLY).approval == "never"
    additive = server.policy("files.append", ADDITIVE)
    assert (additive.approval, additive.side_effects, additive.idempotent) == ("never", True, True)
    unknown = server.policy("files.mystery", None)
    assert (unknown.approval, unknown.side_effects, unknown.idempotent) == ("always", True, False)
    touch = server.policy("files.touch", READ_ONLY)
    assert (touch.side_effects, touch.idempotent) == (True, True)
    assert server.policy("files.stat", None).approval == "never"


def test_untrusted_hints_are_ignored_and_a_default_applies() -> None:
    distrust = MCPServer("x", url="http://127.0.0.1:9/mcp", trust_annotations=False)
    policy = distrust.policy("x.read", READ_ONLY)
    assert (policy.approval, policy.side_effects, policy.idempotent) == ("always", True, False)
    lenient = MCPServer("y", url="https://mcp.example/mcp", default_approval="never")
    assert lenient.policy("y.drop", {"destructiveHint": True}).approval == "never"


def test_bad_configurations_are_refused_when_declared() -> None:
    for kwargs, says in [
        ({}, "exactly one of command= .* or url="),
        ({"command": ["srv"], "url": "http://h/mcp"}, "exactly one of"),
        ({"url": "ftp://h/mcp"}, "url must be http"),
        ({"command": ["srv"], "approval": {"*": "sometimes"}}, "'never', 'always' or a predicate"),
    ]:
        with pytest.raises(ConfigError, match=says):
            MCPServer("bad", **kwargs)  # type: ignore[arg-type]


def test_secrets_come_from_the_environment_and_stay_out_of_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = MCPServer(
        "api",
        url="https://mcp.example/mcp",
        headers={"X-Team": "ops"},
        headers_from_env={"Authorization": "MCP_TOKEN"},
        include=("search*",),
    )
    monkeypatch.delenv("MCP_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"\$MCP_TOKEN, which is not set"):
        server.http_headers()
    monkeypatch.setenv("MCP_TOKEN", "Bearer s3cret")
    assert server.http_headers() == {"X-Team": "ops", "Authorization": "Bearer s3cret"}
    assert server.source == "http:https://mcp.example/mcp" and "s3cret" not in server.source
    assert server.transport == "http"
    assert server.wants("search_docs") and not server.wants("delete_docs")
    monkeypatch.setenv("FROM_PARENT", "1")
    stdio = MCPServer("s", command=["srv"], env={"A": "b"}, env_from=("FROM_PARENT", "ABSENT"))
    assert stdio.child_env() == {"FROM_PARENT": "1", "A": "b"}


def test_a_tool_version_changes_with_its_schema_or_description() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    version = schema_version(schema, "Search.")
    assert len(version) == 10 and version == schema_version(
        dict(reversed(schema.items())), "Search."
    )
    assert schema_version(schema, "Search the docs.") != version
    assert schema_version({**schema, "required": ["q"]}, "Search.") != version
