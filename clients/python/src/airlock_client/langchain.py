"""The agent's airlock tools as LangChain ``StructuredTool`` s (``pip install langchain-core``).

::

    from airlock_client import AirlockClient
    from airlock_client.langchain import tools

    llm_with_tools = llm.bind_tools(tools(AirlockClient(url, token)))

Each tool keeps the name, description and JSON schema the broker lists for this agent and runs the
call through the broker: ``invoke`` returns the scrubbed result (a dict). A refusal becomes a
``ToolException`` whose text is ``{"ok": false, "error": {"code", "message"}}``, which the tool
hands to the model (``handle_tool_error``); with ``raise_errors=True`` the
:class:`~airlock_client.AirlockError` is raised instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence

from ._adapt import AnyClient, acall, error_text, specs_of, specs_of_async
from ._client import AsyncAirlockClient, Tool
from ._errors import AirlockError

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.tools import StructuredTool

__all__ = ["tools", "atools", "structured_tool"]


def structured_tool(client: AnyClient, spec: Tool, *, raise_errors: bool = False) -> "StructuredTool":
    """One airlock tool as a ``StructuredTool``."""
    try:
        from langchain_core.tools import StructuredTool, ToolException
    except ImportError as e:  # pragma: no cover - exercised only without langchain-core
        raise ImportError("airlock_client.langchain needs LangChain: pip install langchain-core") from e
    name = spec.name

    def refused(e: AirlockError) -> Exception:
        return e if raise_errors else ToolException(error_text(e))

    def run(**arguments: Any) -> Dict[str, Any]:
        try:
            return client.call(name, arguments)  # type: ignore[return-value]
        except AirlockError as e:
            raise refused(e) from None

    async def arun(**arguments: Any) -> Dict[str, Any]:
        try:
            return await acall(client, name, arguments)
        except AirlockError as e:
            raise refused(e) from None

    return StructuredTool.from_function(
        func=None if isinstance(client, AsyncAirlockClient) else run,
        coroutine=arun,
        name=name,
        description=spec.description,
        args_schema=spec.input_schema,
        infer_schema=False,
        handle_tool_error=True,
    )


def tools(
    client: AnyClient,
    *,
    specs: Optional[Sequence[Tool]] = None,
    include: Optional[Iterable[str]] = None,
    raise_errors: bool = False,
) -> List["StructuredTool"]:
    """The tools the broker lists for this agent (or ``specs``), optionally only those named in ``include``."""
    return [structured_tool(client, s, raise_errors=raise_errors) for s in specs_of(client, specs, include)]


async def atools(
    client: AnyClient,
    *,
    include: Optional[Iterable[str]] = None,
    raise_errors: bool = False,
) -> List["StructuredTool"]:
    """As :func:`tools`, listing with an :class:`~airlock_client.AsyncAirlockClient` (or off the loop)."""
    return tools(client, specs=await specs_of_async(client), include=include, raise_errors=raise_errors)
