"""Logging and progress with the official Python SDK (PyPI `mcp`): prints a JSON summary of every
log message and progress notification the client received, call by call.

    AIRLOCK_TOKEN=... python3 mcp_notify_client.py stdio SERVER_BINARY CONFIG
    AIRLOCK_TOKEN=... python3 mcp_notify_client.py http URL

Assertions live in the Rust test (tests/notifications.rs); this script only reports.
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

# A canary the test planted: the agent sends it as a handle name; no message may repeat it.
CANARY_AS_HANDLE = os.environ.get("CANARY_AS_HANDLE", "")


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def session(client, messages):
    out = {"calls": {}, "capabilities": None}
    caps = client.server_capabilities
    out["capabilities"] = dump(caps) if caps is not None else None

    async def call(key, name, args, progress=False):
        messages.clear()
        seen = []

        async def on_progress(progress, total, message):
            seen.append({"progress": progress, "total": total, "message": message})

        try:
            r = dump(await client.call_tool(name, args, progress_callback=on_progress if progress else None))
        except Exception as e:  # a protocol error is a result too; the test decides
            r = {"exception": type(e).__name__, "text": str(e)}
        out["calls"][key] = {"result": r, "messages": list(messages), "progress": seen}

    echo = ("http_request", {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"})
    query = ("query_db", {"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders ORDER BY id"})
    # No level set yet: nothing is sent.
    await call("before_level", *echo)
    try:
        await client.set_logging_level("notice")
        out["set_level"] = "ok"
    except Exception as e:
        out["set_level"] = f"{type(e).__name__}: {e}"
    await call("echo_notice", *echo)
    await call("query_notice", *query)
    await call("forbidden_notice", "query_db", {"credential_handle": "SECRET_ONLY", "query": "SELECT 1"})
    await call("unknown_tool_notice", "drop_everything", {"credential_handle": "APP_DB"})
    await call("canary_handle_notice", "query_db", {"credential_handle": CANARY_AS_HANDLE, "query": "SELECT 1"})
    await client.set_logging_level("debug")
    await call("query_debug", *query)
    await client.set_logging_level("error")
    await call("forbidden_error", "query_db", {"credential_handle": "SECRET_ONLY", "query": "SELECT 1"})
    # Progress, for a call that asks for it, and none for one that does not.
    await call("query_progress", *query, progress=True)
    await call("refused_progress", "query_db", {"credential_handle": "SECRET_ONLY", "query": "SELECT 1"}, progress=True)
    return out


async def main():
    mode = sys.argv[1]
    token = os.environ["AIRLOCK_TOKEN"]
    messages = []

    async def on_log(params):
        messages.append(dump(params))

    if mode == "stdio":
        env = {"AIRLOCK_TOKEN": token}
        for k in ("PATH", "HOME", "RUST_LOG"):
            if k in os.environ:
                env[k] = os.environ[k]
        server = StdioServerParameters(command=sys.argv[2], args=[sys.argv[3]], env=env)
        async with Client(server, logging_callback=on_log) as client:
            out = await session(client, messages)
    elif mode == "http":
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with http:
            async with Client(streamable_http_client(sys.argv[2], http_client=http), logging_callback=on_log) as client:
                out = await session(client, messages)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
