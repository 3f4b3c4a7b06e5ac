"""AirlockClient and AsyncAirlockClient against a real `airlock serve` (conftest.py)."""

from __future__ import annotations

import asyncio
import pickle
import secrets

import httpx
import pytest

from airlock_client import AirlockClient, AirlockError, AsyncAirlockClient, Tool

# A distinctive argument value: a refusal's text must never quote what the agent sent.
ARG_CANARY = "argCanary7Qx"


def echoed_raw_control(broker) -> str:
    """What an unscrubbed echo would have held (never printed: only fed to leaks())."""
    return f"Bearer {broker.secret}"


def test_health(client: AirlockClient) -> None:
    assert client.health() is True


def test_lists_the_agents_tools_with_only_its_handles(broker, client: AirlockClient) -> None:
    tools = client.tools()
    assert all(isinstance(t, Tool) for t in tools)
    names = sorted(t.name for t in tools)
    assert names == ["http_request", "request_secret", "request_status", "share_secret"]
    by_name = {t.name: t for t in tools}
    assert by_name["http_request"].handles == ["API"], "OTHER_API is not granted to bot"
    assert by_name["share_secret"].handles == ["SHARED"]
    assert by_name["request_status"].handles == []
    assert by_name["request_status"].read_only is True
    assert by_name["http_request"].input_schema["type"] == "object"
    assert "credential_handle" in by_name["http_request"].input_schema["required"]

    openai = client.list_tools("openai")
    assert {t["type"] for t in openai} == {"function"}
    assert sorted(t["function"]["name"] for t in openai) == names
    anthropic = client.list_tools("anthropic")
    assert all("input_schema" in t for t in anthropic)
    with pytest.raises(ValueError):
        client.list_tools("yaml")
    broker.assert_clean(client.list_tools("mcp"), "a tool definition")


def test_http_request_goes_through_the_broker_and_comes_back_scrubbed(broker, client: AirlockClient) -> None:
    # The leak check is not vacuous.
    control = broker.leaks({"echo": echoed_raw_control(broker)})
    assert control, "leaks() misses the secret"

    before = len(broker.upstream.seen)
    inv = client.invoke("http_request", broker.echo_args("/v1/echo?n=1"))
    broker.assert_clean(inv)
    broker.assert_clean(inv.result)
    assert inv.request_id, "the broker names the call"
    status, echoed = broker.body_of(inv.result)
    assert status == 200
    assert echoed["path"] == "/v1/echo?n=1"
    # The upstream really got the credential (airlock injected it) and echoed it back: the
    # agent sees the header redacted.
    got = broker.upstream.seen[before:]
    assert [(s.method, s.path) for s in got] == [("GET", "/v1/echo?n=1")]
    injected = got[0].authorization == f"Bearer {broker.secret}"
    assert injected, "the upstream did not receive the injected secret"
    assert echoed["authorization"].startswith("Bearer ")
    assert len(echoed["authorization"]) > len("Bearer ")

    # call() returns the same result object.
    result = client.call("http_request", broker.echo_args("/v1/echo", method="POST") | {"body": "hello"})
    broker.assert_clean(result)
    status, echoed = broker.body_of(result)
    assert (status, echoed["method"], echoed["body"]) == (200, "POST", "hello")


def test_a_handle_not_granted_is_handle_unavailable(broker, client: AirlockClient) -> None:
    before = len(broker.upstream.seen)
    for handle in ("OTHER_API", "NO_SUCH_HANDLE"):
        with pytest.raises(AirlockError) as ei:
            client.call("http_request", broker.echo_args(f"/v1/echo?{ARG_CANARY}", handle=handle))
        e = ei.value
        assert (e.code, e.status) == ("handle-unavailable", 403)
        assert e.request_id
        assert ARG_CANARY not in str(e) and ARG_CANARY not in repr(e) and handle not in str(e)
    assert len(broker.upstream.seen) == before, "nothing was sent"


def test_a_destination_outside_the_handle_is_refused(broker, client: AirlockClient) -> None:
    before = len(broker.upstream.seen)
    with pytest.raises(AirlockError) as ei:
        client.call("http_request", broker.echo_args(f"/admin/{ARG_CANARY}"))
    assert (ei.value.code, ei.value.status) == ("destination-not-allowed", 403)
    assert ARG_CANARY not in str(ei.value)
    with pytest.raises(AirlockError) as ei:
        client.call("http_request", broker.echo_args(f"https://evil.example/v1/{ARG_CANARY}"))
    assert ei.value.code == "destination-not-allowed"
    assert len(broker.upstream.seen) == before, "nothing was sent"


def test_unknown_tools_and_bad_arguments_have_their_codes(broker, client: AirlockClient) -> None:
    with pytest.raises(AirlockError) as ei:
        client.call("drop_database", {"credential_handle": "API"})
    assert (ei.value.code, ei.value.status) == ("unknown-tool", 404)
    with pytest.raises(AirlockError) as ei:
        client.call("http_request", {"credential_handle": "API", "method": "GET", "path_or_url": 42, "x": ARG_CANARY})
    assert (ei.value.code, ei.value.status) == ("invalid-arguments", 400)
    assert ARG_CANARY not in str(ei.value)
    # An error survives pickling with its fields (for multiprocessing).
    e2 = pickle.loads(pickle.dumps(ei.value))
    assert (e2.code, e2.status, e2.detail) == (ei.value.code, ei.value.status, ei.value.detail)


def test_a_bad_token_is_unauthenticated_and_never_quoted(broker) -> None:
    bad = "bogus_" + secrets.token_urlsafe(24)
    with AirlockClient(broker.base_url, bad) as c:
        for op in (c.tools, lambda: c.call("http_request", broker.echo_args())):
            with pytest.raises(AirlockError) as ei:
                op()
            e = ei.value
            assert (e.code, e.status) == ("unauthenticated", 401)
            quoted = bad in str(e) or bad in repr(e) or bad in repr(c)
            assert not quoted, "the token appears in the error"
    leaked = broker.token in repr(AirlockClient(broker.base_url, broker.token))
    assert not leaked, "the client's repr shows the token"
    with pytest.raises(ValueError) as ei2:
        AirlockClient(broker.base_url, "two words")
    assert "two words" not in str(ei2.value)


def test_a_broker_that_does_not_answer_is_unreachable(broker) -> None:
    from conftest import free_port

    with AirlockClient(f"http://127.0.0.1:{free_port()}", broker.token, timeout=5) as c:
        with pytest.raises(AirlockError) as ei:
            c.tools()
        assert c.health() is False
    assert (ei.value.code, ei.value.status) == ("unreachable", None)
    broker.assert_clean(str(ei.value), "the error")


def test_plain_http_goes_only_to_loopback() -> None:
    with pytest.raises(ValueError):
        AirlockClient("http://airlock.example:7878", "t0ken")
    AirlockClient("http://airlock.example:7878", "t0ken", allow_insecure_http=True).close()
    AirlockClient("https://airlock.example", "t0ken").close()
    AirlockClient("http://localhost:7878", "t0ken").close()
    AirlockClient("http://[::1]:7878", "t0ken").close()
    with pytest.raises(ValueError):
        AirlockClient("ftp://127.0.0.1", "t0ken")


def test_the_agents_unix_socket(broker) -> None:
    with AirlockClient(f"unix:{broker.socket}", broker.token) as c:
        assert "http_request" in [t.name for t in c.tools()]
        result = c.call("http_request", broker.echo_args())
        broker.assert_clean(result)
        assert broker.body_of(result)[0] == 200


def test_share_secret_sends_the_link_to_the_recipient_not_the_agent(broker, client: AirlockClient) -> None:
    r = client.share_secret("SHARED", "alice@example.com", views=1, expires_in=600)
    broker.assert_clean(r)
    assert sorted(r) == ["expires_at", "recipient", "share_id"]
    assert r["recipient"] == "alice@example.com"
    line = next(l for l in broker.outbox_lines() if l.get("share_id") == r["share_id"])
    assert line["purpose"] == "share"
    link = line["link"]
    assert f"/s/{r['share_id']}#" in link
    assert link not in str(r) and link.split("#", 1)[1] not in str(r), "the agent got the link"

    status = client.share_status(r["share_id"])
    assert (status["share_id"], status["opened"], status["views_used"]) == (r["share_id"], False, 0)
    assert client.revoke_share(r["share_id"]) == {"share_id": r["share_id"], "revoked": True}
    # A revoked link is gone: revoking it again is share-unavailable.
    with pytest.raises(AirlockError) as ei:
        client.revoke_share(r["share_id"])
    assert (ei.value.code, ei.value.status) == ("share-unavailable", 404)
    with pytest.raises(AirlockError) as ei:
        client.share_status("not-a-share-id")
    assert (ei.value.code, ei.value.status) == ("invalid-share", 400)

    with pytest.raises(AirlockError) as ei:
        client.share_secret("SHARED", "mallory@example.com")
    assert (ei.value.code, ei.value.status) == ("recipient-not-allowed", 403)
    with pytest.raises(AirlockError) as ei:
        client.share_secret("API", "alice@example.com")
    assert ei.value.code == "handle-unavailable"


def test_request_secret_and_its_status(broker, client: AirlockClient) -> None:
    r = client.request_secret(
        "VENDOR_PASSWORD",
        "The vendor portal password for the nightly export",
        "secret",
        "alice@example.com",
        format={"min_length": 8},
        expires_in=600,
    )
    assert sorted(r) == ["expires_at", "handle", "recipient", "request_id", "status"]
    assert (r["handle"], r["status"], r["recipient"]) == ("VENDOR_PASSWORD", "pending", "alice@example.com")
    line = next(l for l in broker.outbox_lines() if l.get("request_id") == r["request_id"])
    assert line["purpose"] == "request"
    assert line["link"] not in str(r), "the agent got the link"

    s = client.request_status(r["request_id"])
    assert (s["request_id"], s["handle"], s["status"]) == (r["request_id"], "VENDOR_PASSWORD", "pending")

    # The same name again, while the first is pending.
    with pytest.raises(AirlockError) as ei:
        client.request_secret("VENDOR_PASSWORD", "again", "secret", "alice@example.com")
    assert (ei.value.code, ei.value.status) == ("handle-exists", 409)
    # A configured handle's name.
    with pytest.raises(AirlockError) as ei:
        client.request_secret("API", "shadow", "secret", "alice@example.com")
    assert ei.value.code == "handle-exists"
    # Someone else's (or no) request.
    with pytest.raises(AirlockError) as ei:
        client.request_status("req_does_not_exist")
    assert (ei.value.code, ei.value.status) == ("request-unavailable", 404)


def test_the_async_client(broker) -> None:
    async def main() -> None:
        async with AsyncAirlockClient(broker.base_url, broker.token) as c:
            assert await c.health()
            names = [t.name for t in await c.tools()]
            assert "http_request" in names
            results = await asyncio.gather(*(c.call("http_request", broker.echo_args(f"/v1/echo?i={i}")) for i in range(4)))
            broker.assert_clean(results)
            assert sorted(broker.body_of(r)[1]["path"] for r in results) == [f"/v1/echo?i={i}" for i in range(4)]
            with pytest.raises(AirlockError) as ei:
                await c.call("http_request", broker.echo_args(handle="OTHER_API"))
            assert ei.value.code == "handle-unavailable"

    asyncio.run(main())


def test_a_non_json_answer_is_invalid_response() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with AirlockClient("https://airlock.example", "t0ken", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(AirlockError) as ei:
            c.tools()
    assert (ei.value.code, ei.value.status) == ("invalid-response", 502)


def test_the_server_log_holds_no_secret(broker, client: AirlockClient) -> None:
    client.call("http_request", broker.echo_args())
    broker.assert_clean(broker.log.read_text(errors="replace"), "the broker's log")
