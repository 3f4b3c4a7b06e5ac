"""The agent's airlock tools as OpenAI Agents SDK ``FunctionTool`` s (``pip install openai-agents``).

::

    from agents import Agent
    from airlock_client import AirlockClient
    from airlock_client.openai_agents import tools

    agent = Agent(name="support", tools=tools(AirlockClient(url, token)))

Each tool keeps the name, description and JSON schema the broker lists for this agent (whose
``credential_handle`` enum holds only the handles it may use), and runs the call through the
broker. The model gets the scrubbed result as JSON, or a refusal as
``{"ok": false, "error": {"code", "message"}}`` so it can react to ``approval-required`` or
``handle-unavailable``; with ``raise_errors=True`` the :class:`~airlock_client.AirlockError` is
raised instead (and fails the run).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence

from ._adapt import AnyClient, acall, error_text, result_text, specs_of, specs_of_async
from ._client import Tool
from ._errors import AirlockError

if TYPE_CHECKING:  # pragma: no cover
    from agents import FunctionTool

__all__ = ["tools", "atools", "function_tool"]


def function_tool(client: AnyClient, spec: Tool, *, raise_errors: bool = False) -> "FunctionTool":
    """One airlock tool as a ``FunctionTool``."""
    try:
        from agents import FunctionTool
    except ImportError as e:  # pragma: no cover - exercised only without the SDK
        raise ImportError("airlock_client.openai_agents needs the OpenAI Agents SDK: pip install openai-agents") from e
    name = spec.name

    async def on_invoke_tool(ctx: Any, input: str) -> str:
        try:
            arguments = json.loads(input) if input else {}
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            e = AirlockError("invalid-arguments", None, "the arguments are not a JSON object")
            if raise_errors:
                raise e
            return error_text(e)
        try:
            result = await acall(client, name, arguments)
        except AirlockError as e:
            if raise_errors:
                raise
            return error_text(e)
        return result_text(result)

    return FunctionTool(
        name=name,
        description=spec.description,
        params_json_schema=spec.input_schema,
        on_invoke_tool=on_invoke_tool,
        # airlock's schemas have optional arguments, which strict mode cannot express.
        strict_json_schema=False,
    )


def tools(
    client: AnyClient,
    *,
    specs: Optional[Sequence[Tool]] = None,
    include: Optional[Iterable[str]] = None,
    raise_errors: bool = False,
) -> List["FunctionTool"]:
    """The tools the broker lists for this agent (or ``specs``), optionally only those named in ``include``."""
    return [function_tool(client, s, raise_errors=raise_errors) for s in specs_of(client, specs, include)]


async def atools(
    client: AnyClient,
    *,
    include: Optional[Iterable[str]] = None,
    raise_errors: bool = False,
) -> List["FunctionTool"]:
    """As :func:`tools`, listing with an :class:`~airlock_client.AsyncAirlockClient` (or off the loop)."""
    return tools(client, specs=await specs_of_async(client), include=include, raise_errors=raise_errors)
