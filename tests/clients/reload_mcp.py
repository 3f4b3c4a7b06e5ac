"""A reload as an MCP client sees it: the official Python SDK (PyPI `mcp`) runs `airlock mcp`
(the thin client) over stdio and reports every notification it gets and its tool list after each
`notifications/tools/list_changed`. The Rust test (tests/reload.rs) changes the configuration
between steps and asserts; this script only reports.

    AIRLOCK_TOKEN=... AIRLOCK_ENDPOINT=unix:/path python3 reload_mcp.py AIRLOCK STEP_DIR N

It lists its tools and writes STEP_DIR/listed-0; then, N times, waits (at most 60 s) for a tool
list change, lists again and writes STEP_DIR/listed-K. It then waits 1.5 s for any further
notification and prints a JSON summary: {"lists": [[tool JSON...], ...], "notifications": [...]}.
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
    binary, steps, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    env = {k: os.environ[k] for k in ("AIRLOCK_TOKEN", "AIRLOCK_ENDPOINT", "PATH") if k in os.environ}
    notes = []
    changed = asyncio.Event()

    async def on_message(message):
        method = getattr(getattr(message, "root", message), "method", None) or getattr(message, "method", None)
        if method is None:
            return
        notes.append(method)
        if method == "notifications/tools/list_changed":
            changed.set()

    lists = []
    server = StdioServerParameters(command=binary, args=["mcp"], env=env)
    async with Client(server, message_handler=on_message) as client:

        async def listed(k):
            tools = await client.list_tools()
            lists.append([dump(t) for t in tools.tools])
            with open(os.path.join(steps, f"listed-{k}"), "w") as f:
                f.write("ok")

        await listed(0)
        for k in range(1, n + 1):
            await asyncio.wait_for(changed.wait(), timeout=60)
            changed.clear()
            await listed(k)
        await asyncio.sleep(1.5)
    print(json.dumps({"lists": lists, "notifications": notes}))


if __name__ == "__main__":
    asyncio.run(main())
