"""MCP both ways (`pip install 'threadline[mcp]'`); see docs/integrations.md.

* client: tools from MCP servers become intents (`MCPServer`, `mcp_tools`, `follow`).
* server: `threadline mcp` serves the runtime to MCP clients (`server.build_server`).

Importing this package does not import the `mcp` SDK; connecting does.
"""

from .client import MCPConnection, MCPTool, discover, follow, mcp_tools, tool_result_value
from .config import MCPServer, ToolFlags, ToolPolicy, schema_version

__all__ = [
    "MCPConnection",
    "MCPServer",
    "MCPTool",
    "ToolFlags",
    "ToolPolicy",
    "discover",
    "follow",
    "mcp_tools",
    "schema_version",
    "tool_result_value",
]
