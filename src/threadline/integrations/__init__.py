"""Bridges to other agent ecosystems. Each lives in its own subpackage behind an extra:

mcp     tools from MCP servers become intents; `threadline mcp` serves the runtime
        to MCP clients (`pip install 'threadline[mcp]'`)
"""

__all__: list[str] = []
