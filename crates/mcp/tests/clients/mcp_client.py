"""Drives airlock's MCP server with the official Python SDK (PyPI `mcp`) and prints a JSON summary.

    AIRLOCK_TOKEN=... python3 mcp_client.py stdio SERVER_BINARY CONFIG
    AIRLOCK_TOKEN=... python3 mcp_client.py http URL

Every message the client received is dumped into the summary, so the Rust test can check that no
secret appears in any of it. Assertions live in the Rust test; this script only reports.
"""

import asyncio
import json
import os
import sys
import traceback

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def session(client):
    out = {"calls": {}}
    tools = await client.list_tools()
    out["tools"] = [dump(t) for t in tools.tools]
    calls = {
        "query_ok": ("query_db", {"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders ORDER BY id"}),
        "http_ok": ("http_request", {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/items"}),
        "echo": ("http_request", {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"}),
        "forbidden_handle": ("query_db", {"credential_handle": "SECRET_ONLY", "query": "SELECT 1"}),
        "wrong_tool_for_handle": ("query_db", {"credential_handle": "API", "query": "SELECT 1"}),
        "unknown_handle": ("query_db", {"credential_handle": "NOPE", "query": "SELECT 1"}),
        "unknown_tool": ("drop_everything", {"credential_handle": "APP_DB"}),
        "wrong_type": ("query_db", {"credential_handle": "APP_DB", "query": 5}),
    }
    for key, (name, args) in calls.items():
        try:
            out["calls"][key] = dump(await client.call_tool(name, args))
        except Exception as e:  # a protocol error is a result too; the test decides
            out["calls"][key] = {"exception": type(e).__name__, "text": str(e)}
    return out


async def main():
    mode = sys.argv[1]
    token = os.environ["AIRLOCK_TOKEN"]
    if mode == "stdio":
        env = {"AIRLOCK_TOKEN": token}
        for k in ("PATH", "HOME", "RUST_LOG"):
            if k in os.environ:
                env[k] = os.environ[k]
        server = StdioServerParameters(command=sys.argv[2], args=[sys.argv[3]], env=env)
        async with Client(server) as client:
            out = await session(client)
    elif mode == "http":
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with http:
            async with Client(streamable_http_client(sys.argv[2], http_client=http)) as client:
                out = await session(client)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
