"""An agent whose tools come from the shop MCP server over stdio (for the CLI tests:
`threadline build` pins its schemas, `--locked` refuses a drifted one).

SHOP_SCHEMA and SHOP_LOG are passed through to the server process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from threadline import Agent
from threadline.integrations.mcp import MCPServer, mcp_tools
from threadline.testing import ScriptedModel, intent

SERVER = Path(__file__).with_name("shop_server.py")

shop = MCPServer(
    "shop",
    command=[sys.executable, str(SERVER), "stdio"],
    env_from=["SHOP_SCHEMA", "SHOP_LOG"],
    include=["lookup", "refund"],
)

agent = Agent(
    "mcp_shop",
    tools=mcp_tools(shop),
    instructions="Help with orders.",
    model=ScriptedModel(
        [intent("lookup", order_id="o1"), intent("done_for_now", message="o1 has shipped")]
    ),
)
