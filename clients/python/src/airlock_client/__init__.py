"""A client of the airlock secrets broker for agents written in Python.

The agent names credentials by handle; airlock performs the call and returns a scrubbed result::

    from airlock_client import AirlockClient, AirlockError

    with AirlockClient("http://127.0.0.1:7878", token) as airlock:
        tools = airlock.tools()
        r = airlock.call("http_request", {"credential_handle": "BILLING_API", "method": "GET", "path_or_url": "/v1/invoices"})

Adapters for agent frameworks (imported lazily, so the client needs neither):
:mod:`airlock_client.openai_agents` (OpenAI Agents SDK) and :mod:`airlock_client.langchain`.
"""

from ._client import TOOL_FORMATS, AirlockClient, AsyncAirlockClient, Invocation, Tool, __version__
from ._errors import INVALID_RESPONSE, UNREACHABLE, AirlockError

__all__ = [
    "AirlockClient",
    "AsyncAirlockClient",
    "AirlockError",
    "Invocation",
    "Tool",
    "TOOL_FORMATS",
    "UNREACHABLE",
    "INVALID_RESPONSE",
    "__version__",
]
