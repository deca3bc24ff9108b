"""A real MCP server for the tests, written with the SDK's own server API (MCPServer, the
successor of FastMCP in mcp 2.x).

    python shop_server.py stdio
    python shop_server.py http PORT_FILE [PORT]  # streamable HTTP on 127.0.0.1, port written

Environment:
    SHOP_LOG      append one JSON line per tool run (what actually happened on the server)
    SHOP_SCHEMA   "2" publishes a changed `lookup` schema (a drifted tool)
    SHOP_HOLD     (http) once imported, create SHOP_HOLD.ready and listen only when the
                  file SHOP_HOLD exists: a restart whose slow part is already done
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

shop = MCPServer("shop")


def _record(tool: str, **arguments: object) -> None:
    path = os.environ.get("SHOP_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "pid": os.getpid(), **arguments}) + "\n")
            f.flush()


if os.environ.get("SHOP_SCHEMA") == "2":

    @shop.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(order_id: str, include_history: bool = False) -> str:
        """Look up an order by id."""
        _record("lookup", order_id=order_id)
        return f"order {order_id}: shipped"

else:

    @shop.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(order_id: str) -> str:
        """Look up an order by id."""
        _record("lookup", order_id=order_id)
        return f"order {order_id}: shipped"


@shop.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False))
def refund(order_id: str, amount: Annotated[float, Field(gt=0)]) -> dict[str, object]:
    """Refund part of an order to the customer's card."""
    _record("refund", order_id=order_id, amount=amount)
    if amount == 666:
        os._exit(17)  # killed mid-call: the refund may or may not have gone through
    return {"refunded": amount, "order_id": order_id}


@shop.tool(annotations=ToolAnnotations(read_only_hint=True))
def audit(order_id: str) -> str:
    """Audit an order (always fails: the audit service is down)."""
    raise RuntimeError(f"audit service unavailable for {order_id}")


@shop.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
async def open_gift_cards(ctx: Context) -> str:
    """Start selling gift cards (adds a tool and says so)."""

    def gift_card(amount: int) -> str:
        """Sell a gift card."""
        return f"gift card for {amount}"

    shop.add_tool(gift_card, annotations=ToolAnnotations(destructive_hint=False))
    await ctx.session.send_tool_list_changed()
    return "gift cards open"


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        shop.run()
        return
    hold = os.environ.get("SHOP_HOLD")
    if hold:
        import mcp.server.streamable_http_manager  # noqa: F401  (what `run` imports to listen)
        import uvicorn  # noqa: F401

        Path(hold + ".ready").touch()
        while not os.path.exists(hold):
            time.sleep(0.01)
    if len(sys.argv) > 3:
        port = int(sys.argv[3])
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    with open(sys.argv[2] + ".tmp", "w", encoding="utf-8") as f:
        f.write(str(port))
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    shop.run(transport="streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
