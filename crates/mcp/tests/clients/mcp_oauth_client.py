"""The official Python MCP SDK's OAuth client (PyPI `mcp`) against airlock's MCP endpoint.

    python3 mcp_oauth_client.py MCP_URL AS_CONTROL_URL

No token is given: the SDK gets a 401 from airlock, reads its protected resource metadata
(RFC 9728), discovers the authorization server, registers itself (RFC 7591), authorizes with
PKCE and the resource indicator, exchanges the code and calls again with the access token. The
person at the authorization server is simulated: the redirect handler follows the provider's
redirects (login and consent happen without a page) up to the client's redirect URI. On a
`403 insufficient_scope` (a tool the token has no scope for) the SDK steps up: before that
second authorization the person agrees to `airlock:http_request` (AS_CONTROL_URL/_consent).

Prints a JSON summary: tools, call results, the authorization URLs seen and the access tokens
obtained (so the Rust test can check where they went). Assertions live in the Rust test.
"""

import asyncio
import json
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT = "http://127.0.0.1:9/callback"


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None
        self.seen_tokens = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens
        self.seen_tokens.append(tokens.access_token)

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info: OAuthClientInformationFull):
        self.client = info


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main():
    url, control = sys.argv[1], sys.argv[2]
    authorizations = []
    result = {}
    browser = httpx2.AsyncClient(timeout=30, follow_redirects=False)

    async def redirect_handler(authorize_url: str):
        authorizations.append(authorize_url)
        if len(authorizations) == 2:
            # The step-up: the person agrees to more this time.
            await browser.post(f"{control}/_consent", params={"add": "airlock:http_request"})
        to = authorize_url
        for _ in range(20):
            r = await browser.get(to)
            loc = r.headers.get("location")
            if loc is None:
                raise RuntimeError(f"authorization stopped at {r.status_code}: {r.text[:200]}")
            to = urljoin(to, loc)
            if to.startswith(REDIRECT):
                q = parse_qs(urlparse(to).query)
                if "error" in q:
                    raise RuntimeError(f"authorization refused: {q}")
                result["code"] = AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])
                return
        raise RuntimeError("too many redirects")

    async def callback_handler():
        return result.pop("code")

    storage = Memory()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="airlock-test-agent",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    out = {"calls": {}}
    http = httpx2.AsyncClient(auth=auth, timeout=30)
    async with browser, http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            out["tools_before"] = [t.name for t in (await client.list_tools()).tools]
            calls = {
                "query_ok": ("query_db", {"credential_handle": "APP_DB", "query": "SELECT id, item FROM orders ORDER BY id"}),
                # Needs airlock:http_request, which the first token lacks: a step-up.
                "http_after_step_up": ("http_request", {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/echo"}),
            }
            for key, (name, args) in calls.items():
                try:
                    out["calls"][key] = dump(await client.call_tool(name, args))
                except Exception as e:  # the test decides
                    out["calls"][key] = {"exception": type(e).__name__, "text": str(e)}
            out["tools_after"] = [t.name for t in (await client.list_tools()).tools]
    out["authorizations"] = authorizations
    out["access_tokens"] = storage.seen_tokens
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
