"""What the framework adapters share: the tool list and one call, blocking or awaited."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._client import AirlockClient, AsyncAirlockClient, Tool
from ._errors import AirlockError

AnyClient = Union[AirlockClient, AsyncAirlockClient]


def specs_of(client: AnyClient, specs: Optional[Sequence[Tool]], include: Optional[Iterable[str]]) -> List[Tool]:
    """The tools to adapt: ``specs`` if given, else the blocking client's listing, filtered by ``include``."""
    if specs is None:
        if isinstance(client, AsyncAirlockClient):
            raise TypeError("with an AsyncAirlockClient, use `await atools(client)`")
        specs = client.tools()
    wanted = set(include) if include is not None else None
    return [s for s in specs if wanted is None or s.name in wanted]


async def specs_of_async(client: AnyClient) -> List[Tool]:
    if isinstance(client, AsyncAirlockClient):
        return await client.tools()
    return await asyncio.to_thread(client.tools)


async def acall(client: AnyClient, tool: str, arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """One call, off the event loop for the blocking client."""
    if isinstance(client, AsyncAirlockClient):
        return await client.call(tool, arguments)
    return await asyncio.to_thread(client.call, tool, arguments)


def error_text(e: AirlockError) -> str:
    """A refusal as a model sees it: the REST envelope's ``{"ok": false, "error": {...}}``."""
    return json.dumps({"ok": False, "error": e.to_dict()})


def result_text(result: Mapping[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False)
