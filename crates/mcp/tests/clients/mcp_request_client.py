"""request_secret over stdio with the official Python SDK (PyPI `mcp`), as a client that declares
URL-mode elicitation and accepts to open the link it is sent; prints a JSON summary.

    AIRLOCK_TOKEN=... python3 mcp_request_client.py SERVER_BINARY CONFIG ARGUMENTS_JSON elicit|plain|modern

`elicit`: the initialize handshake (protocol 2025-11-25, server-to-client requests) with an
elicitation callback; `plain`: the same without one; `modern`: the SDK's default discovery
(protocol 2026-07-28, where a server sends the client no requests) with the callback. The summary holds every elicitation received
and the tool's result; the Rust test follows the elicited URL and checks the rest.
"""

import asyncio
import json
import os
import sys
import traceback

from mcp import Client, types
from mcp.client.stdio import StdioServerParameters


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main():
    binary, config, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    how = sys.argv[4]
    env = {"AIRLOCK_TOKEN": os.environ["AIRLOCK_TOKEN"]}
    for k in ("PATH", "HOME", "RUST_LOG"):
        if k in os.environ:
            env[k] = os.environ[k]
    seen = []

    async def on_elicit(context, params):
        seen.append(dump(params))
        return types.ElicitResult(action="accept")

    server = StdioServerParameters(command=binary, args=[config], env=env)
    kwargs = {"mode": "auto" if how == "modern" else "legacy"}
    if how in ("elicit", "modern"):
        kwargs["elicitation_callback"] = on_elicit
    async with Client(server, **kwargs) as client:
        protocol = client.protocol_version
        tools = await client.list_tools()
        result = await client.call_tool("request_secret", arguments)
        status = None
        rid = (dump(result).get("structuredContent") or {}).get("request_id")
        if rid:
            status = dump(await client.call_tool("request_status", {"request_id": rid}))
    print(json.dumps({"protocol": protocol, "tools": [t.name for t in tools.tools], "elicitations": seen, "result": dump(result), "status": status}))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
