"""The official Python MCP SDK (PyPI `mcp`) launching `airlock mcp`, the thin client, over stdio,
as Claude Code, Claude Desktop or Cursor would. Prints a JSON summary; the Rust test asserts.

    AIRLOCK_TOKEN=... AIRLOCK_ENDPOINT=unix:/path python3 thin_mcp.py /path/to/airlock
"""

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main():
    env = {k: os.environ[k] for k in ("AIRLOCK_TOKEN", "AIRLOCK_ENDPOINT", "PATH") if k in os.environ}
    server = StdioServerParameters(command=sys.argv[1], args=["mcp"], env=env)
    async with Client(server) as client:
        tools = await client.list_tools()
        query = await client.call_tool("query_db", {"credential_handle": "APP", "query": "SELECT v FROM t"})
        refused = await client.call_tool("query_db", {"credential_handle": "API", "query": "SELECT 1"})
    print(json.dumps({"tools": [t.name for t in tools.tools], "query": dump(query), "refused": dump(refused)}))


if __name__ == "__main__":
    asyncio.run(main())
