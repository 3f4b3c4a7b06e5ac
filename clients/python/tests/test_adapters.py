"""The framework adapters against the real broker: OpenAI Agents SDK FunctionTools and LangChain
StructuredTools run the real call through airlock. No model is called: the OpenAI Agents run
uses a scripted Model that asks for one tool call and then repeats the tool's output."""

from __future__ import annotations

import asyncio
import json
from typing import Any, List

import pytest

from airlock_client import AirlockClient, AirlockError, AsyncAirlockClient

agents = pytest.importorskip("agents")
lc_tools = pytest.importorskip("langchain_core.tools")

from airlock_client import langchain as airlock_langchain  # noqa: E402
from airlock_client import openai_agents as airlock_openai  # noqa: E402

NAMES = ["http_request", "request_secret", "request_status", "share_secret"]


# --- OpenAI Agents SDK ---------------------------------------------------------------------------


def tool_context(name: str, args: str) -> Any:
    from agents.tool_context import ToolContext

    return ToolContext(context=None, tool_name=name, tool_call_id="call_1", tool_arguments=args)


def test_openai_function_tools_mirror_the_listing(client: AirlockClient) -> None:
    tools = airlock_openai.tools(client)
    assert all(isinstance(t, agents.FunctionTool) for t in tools)
    assert sorted(t.name for t in tools) == NAMES
    by_name = {t.name: t for t in tools}
    http = by_name["http_request"]
    listed = {t.name: t for t in client.tools()}["http_request"]
    assert http.description == listed.description
    assert http.params_json_schema == listed.input_schema
    assert http.params_json_schema["properties"]["credential_handle"]["enum"] == ["API"]
    only = airlock_openai.tools(client, include=["http_request"])
    assert [t.name for t in only] == ["http_request"]


def test_openai_on_invoke_tool_runs_the_call_through_the_broker(broker, client: AirlockClient) -> None:
    http = airlock_openai.tools(client, include=["http_request"])[0]
    before = len(broker.upstream.seen)
    args = json.dumps(broker.echo_args("/v1/echo?via=openai-agents"))
    out = asyncio.run(http.on_invoke_tool(tool_context("http_request", args), args))
    broker.assert_clean(out, "the tool output")
    assert isinstance(out, str)
    status, echoed = broker.body_of(json.loads(out))
    assert (status, echoed["path"]) == (200, "/v1/echo?via=openai-agents")
    got = broker.upstream.seen[before:]
    injected = len(got) == 1 and got[0].authorization == f"Bearer {broker.secret}"
    assert injected, "the upstream did not receive the injected secret"

    # A refusal is shown to the model as the envelope's error, with its code.
    denied = json.dumps(broker.echo_args(handle="OTHER_API"))
    out = asyncio.run(http.on_invoke_tool(tool_context("http_request", denied), denied))
    err = json.loads(out)
    assert err["ok"] is False and err["error"]["code"] == "handle-unavailable"
    out = asyncio.run(http.on_invoke_tool(tool_context("http_request", "not json"), "not json"))
    assert json.loads(out)["error"]["code"] == "invalid-arguments"

    # Or raised, when asked.
    strict = airlock_openai.tools(client, include=["http_request"], raise_errors=True)[0]
    with pytest.raises(AirlockError) as ei:
        asyncio.run(strict.on_invoke_tool(tool_context("http_request", denied), denied))
    assert (ei.value.code, ei.value.status) == ("handle-unavailable", 403)


def test_openai_tools_from_the_async_client(broker) -> None:
    async def main() -> str:
        async with AsyncAirlockClient(broker.base_url, broker.token) as c:
            tools = await airlock_openai.atools(c, include=["http_request"])
            args = json.dumps(broker.echo_args("/v1/echo?via=async"))
            return await tools[0].on_invoke_tool(tool_context("http_request", args), args)

    out = asyncio.run(main())
    broker.assert_clean(out, "the tool output")
    assert broker.body_of(json.loads(out))[1]["path"] == "/v1/echo?via=async"


class ScriptedModel(agents.Model):  # type: ignore[misc]
    """A model that calls http_request once, then answers with the tool's output verbatim."""

    def __init__(self, arguments: dict) -> None:
        self.arguments = arguments
        self.seen_tools: List[str] = []
        self.turn = 0

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, *args: Any, **kwargs: Any) -> Any:
        from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

        self.turn += 1
        self.seen_tools = [t.name for t in tools]
        if self.turn == 1:
            call = ResponseFunctionToolCall(
                id="fc_1", call_id="call_1", name="http_request", arguments=json.dumps(self.arguments), type="function_call", status="completed"
            )
            return agents.ModelResponse(output=[call], usage=agents.Usage(), response_id=None)
        outputs = [i for i in input if isinstance(i, dict) and i.get("type") == "function_call_output"]
        text = outputs[-1]["output"] if outputs else ""
        text = text if isinstance(text, str) else json.dumps(text)
        msg = ResponseOutputMessage(
            id="msg_1",
            content=[ResponseOutputText(annotations=[], text=text, type="output_text")],
            role="assistant",
            status="completed",
            type="message",
        )
        return agents.ModelResponse(output=[msg], usage=agents.Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


def test_an_agents_sdk_run_calls_the_broker_through_the_function_tool(broker, client: AirlockClient) -> None:
    agents.set_tracing_disabled(True)
    model = ScriptedModel(broker.echo_args("/v1/echo?via=runner"))
    agent = agents.Agent(name="support", instructions="Use the tools.", model=model, tools=airlock_openai.tools(client))
    before = len(broker.upstream.seen)
    result = asyncio.run(agents.Runner.run(agent, "fetch the echo", run_config=agents.RunConfig(tracing_disabled=True)))
    broker.assert_clean(result.final_output, "the run's output")
    broker.assert_clean([repr(i) for i in result.new_items], "the run's items")
    assert sorted(model.seen_tools) == NAMES
    assert [s.path for s in broker.upstream.seen[before:]] == ["/v1/echo?via=runner"]
    status, echoed = broker.body_of(json.loads(result.final_output))
    assert (status, echoed["path"]) == (200, "/v1/echo?via=runner")


# --- LangChain -----------------------------------------------------------------------------------


def test_langchain_structured_tools_mirror_the_listing(client: AirlockClient) -> None:
    tools = airlock_langchain.tools(client)
    assert all(isinstance(t, lc_tools.StructuredTool) for t in tools)
    assert sorted(t.name for t in tools) == NAMES
    http = {t.name: t for t in tools}["http_request"]
    listed = {t.name: t for t in client.tools()}["http_request"]
    assert http.description == listed.description
    assert http.args_schema == listed.input_schema
    assert http.args["credential_handle"]["enum"] == ["API"]
    # What a chat model's bind_tools would send.
    from langchain_core.utils.function_calling import convert_to_openai_tool

    assert convert_to_openai_tool(http)["function"]["parameters"]["properties"]["credential_handle"]["enum"] == ["API"]


def test_langchain_invoke_runs_the_call_through_the_broker(broker, client: AirlockClient) -> None:
    http = airlock_langchain.tools(client, include=["http_request"])[0]
    before = len(broker.upstream.seen)
    result = http.invoke(broker.echo_args("/v1/echo?via=langchain"))
    broker.assert_clean(result, "the tool's result")
    assert isinstance(result, dict)
    status, echoed = broker.body_of(result)
    assert (status, echoed["path"]) == (200, "/v1/echo?via=langchain")
    got = broker.upstream.seen[before:]
    injected = len(got) == 1 and got[0].authorization == f"Bearer {broker.secret}"
    assert injected, "the upstream did not receive the injected secret"

    # As a model's tool call: a ToolMessage whose content is the result as JSON.
    msg = http.invoke({"type": "tool_call", "id": "call_7", "name": "http_request", "args": broker.echo_args("/v1/echo?via=toolcall")})
    broker.assert_clean(msg.content, "the ToolMessage")
    assert msg.tool_call_id == "call_7"
    assert broker.body_of(json.loads(msg.content))[1]["path"] == "/v1/echo?via=toolcall"

    # A refusal goes back to the model with its code ...
    out = http.invoke(broker.echo_args(handle="OTHER_API"))
    assert json.loads(out)["error"]["code"] == "handle-unavailable"
    # ... or is raised, when asked.
    strict = airlock_langchain.tools(client, include=["http_request"], raise_errors=True)[0]
    with pytest.raises(AirlockError) as ei:
        strict.invoke(broker.echo_args(handle="OTHER_API"))
    assert (ei.value.code, ei.value.status) == ("handle-unavailable", 403)

    # ainvoke, off the event loop.
    result = asyncio.run(http.ainvoke(broker.echo_args("/v1/echo?via=ainvoke")))
    broker.assert_clean(result, "the tool's result")
    assert broker.body_of(result)[1]["path"] == "/v1/echo?via=ainvoke"


def test_langchain_tools_from_the_async_client(broker) -> None:
    async def main() -> Any:
        async with AsyncAirlockClient(broker.base_url, broker.token) as c:
            tools = await airlock_langchain.atools(c, include=["http_request"])
            return await tools[0].ainvoke(broker.echo_args("/v1/echo?via=lc-async"))

    result = asyncio.run(main())
    broker.assert_clean(result, "the tool's result")
    assert broker.body_of(result)[1]["path"] == "/v1/echo?via=lc-async"
