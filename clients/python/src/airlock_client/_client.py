"""The REST client: ``AirlockClient`` (blocking) and ``AsyncAirlockClient`` (asyncio), over httpx.

Every request carries ``Authorization: Bearer <agent token>`` (README "REST API"). Answers are the
contract's envelope; a refusal becomes :class:`AirlockError` with the envelope's stable code.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote, urlsplit

import httpx

from ._errors import INVALID_RESPONSE, UNREACHABLE, AirlockError

__all__ = ["AirlockClient", "AsyncAirlockClient", "Tool", "Invocation", "TOOL_FORMATS"]

__version__ = "0.1.0"

#: The shapes ``GET /v1/tools`` renders.
TOOL_FORMATS = ("mcp", "openai", "anthropic")

TimeoutTypes = Union[float, int, None, httpx.Timeout]
JSON = Dict[str, Any]


@dataclass(frozen=True)
class Tool:
    """One tool the agent may call, as ``GET /v1/tools?format=mcp`` describes it."""

    name: str
    description: str
    #: The JSON schema of the arguments; ``credential_handle`` is an enum of the usable handles.
    input_schema: JSON = field(repr=False)
    read_only: Optional[bool] = None
    destructive: Optional[bool] = None
    open_world: Optional[bool] = None

    @property
    def handles(self) -> List[str]:
        """The handles this agent may use with the tool (empty for tools without one)."""
        prop = self.input_schema.get("properties", {}).get("credential_handle", {})
        values = prop.get("enum", []) if isinstance(prop, dict) else []
        return [v for v in values if isinstance(v, str)]

    @classmethod
    def from_mcp(cls, d: Mapping[str, Any]) -> "Tool":
        ann = d.get("annotations") or {}
        schema = d.get("inputSchema")
        return cls(
            name=str(d.get("name", "")),
            description=str(d.get("description") or ""),
            input_schema=dict(schema) if isinstance(schema, Mapping) else {"type": "object", "properties": {}},
            read_only=ann.get("readOnlyHint"),
            destructive=ann.get("destructiveHint"),
            open_world=ann.get("openWorldHint"),
        )


@dataclass(frozen=True)
class Invocation:
    """A successful call: the broker's request id (its audit record) and the scrubbed result."""

    request_id: Optional[str]
    result: JSON


def _transport_and_base(base_url: str, allow_insecure_http: bool) -> Tuple[str, Optional[str]]:
    """The httpx base URL and, for ``unix:/path``, the socket path.

    Plain http goes only to a loopback host unless ``allow_insecure_http`` (the token would
    travel in clear), as for airlock's own thin clients.
    """
    if not isinstance(base_url, str) or not base_url:
        raise ValueError("base_url must be a non-empty string")
    if base_url.startswith("unix:"):
        path = base_url[len("unix:"):]
        if not path.startswith("/"):
            raise ValueError("a unix: endpoint needs an absolute socket path")
        return "http://airlock", path
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be http(s)://host[:port] or unix:/path")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ValueError("plain http is allowed only to a loopback host; use https (or allow_insecure_http=True)")
    return base_url.rstrip("/"), None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _headers(token: str) -> Dict[str, str]:
    if not isinstance(token, str) or not token or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        # Never quote the token.
        raise ValueError("token must be a non-empty string without whitespace or control characters")
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": f"airlock-client-python/{__version__}",
    }


def _check_format(format: str) -> str:
    if format not in TOOL_FORMATS:
        raise ValueError("format is mcp, openai or anthropic")
    return format


def _invoke_body(tool: str, arguments: Optional[Mapping[str, Any]]) -> JSON:
    if not isinstance(tool, str) or not tool:
        raise ValueError("tool must be a non-empty string")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise TypeError("arguments must be a mapping")
    return {"tool": tool, "arguments": dict(arguments)}


def _drop_none(d: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


def _path_id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("id must be a non-empty string")
    return quote(value, safe="")


def _unreachable(e: httpx.HTTPError) -> AirlockError:
    # The exception's text may name the URL; it never holds the token. Only its kind is kept.
    kind = "timed out" if isinstance(e, httpx.TimeoutException) else "no answer"
    return AirlockError(UNREACHABLE, None, f"{kind} from the broker ({type(e).__name__})")


def _envelope(resp: httpx.Response) -> JSON:
    """The JSON body of an answer; a refusal (any 4xx/5xx, or ``ok: false``) raises."""
    try:
        body = json.loads(resp.content) if resp.content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AirlockError(INVALID_RESPONSE, resp.status_code, "the answer is not airlock's JSON envelope")
    if resp.status_code >= 400 or body.get("ok") is False:
        err = body.get("error")
        err = err if isinstance(err, dict) else {}
        code = err.get("code")
        message = err.get("message")
        approval = err.get("approval")
        request_id = body.get("request_id")
        raise AirlockError(
            code if isinstance(code, str) and code else INVALID_RESPONSE,
            resp.status_code,
            message if isinstance(message, str) else "",
            request_id=request_id if isinstance(request_id, str) else None,
            approval=approval if isinstance(approval, dict) else None,
        )
    return body


def _without_ok(body: JSON) -> JSON:
    return {k: v for k, v in body.items() if k != "ok"}


def _tools_of(body: JSON) -> List[JSON]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        raise AirlockError(INVALID_RESPONSE, 200, "the answer has no tools list")
    return [t for t in tools if isinstance(t, dict)]


def _invocation(body: JSON) -> Invocation:
    result = body.get("result")
    rid = body.get("request_id")
    if not isinstance(result, dict):
        raise AirlockError(INVALID_RESPONSE, 200, "the answer has no result object")
    return Invocation(request_id=rid if isinstance(rid, str) else None, result=result)


def _share_args(credential_handle: str, recipient: str, views: Optional[int], expires_in: Optional[int]) -> JSON:
    return _drop_none({"credential_handle": credential_handle, "recipient": recipient, "views": views, "expires_in": expires_in})


def _request_args(
    handle: str,
    description: str,
    kind: str,
    recipient: str,
    destination: Optional[str],
    methods: Optional[Sequence[str]],
    inject: Optional[Mapping[str, Any]],
    scope: Optional[str],
    format: Optional[Mapping[str, Any]],
    expires_in: Optional[int],
) -> JSON:
    return _drop_none(
        {
            "handle": handle,
            "description": description,
            "kind": kind,
            "recipient": recipient,
            "destination": destination,
            "methods": list(methods) if methods is not None else None,
            "inject": dict(inject) if inject is not None else None,
            "scope": scope,
            "format": dict(format) if format is not None else None,
            "expires_in": expires_in,
        }
    )


class AirlockClient:
    """A blocking client of one airlock broker, as one agent.

    ``base_url`` is ``http://127.0.0.1:7878`` (plain http only on loopback), ``https://…``, or
    ``unix:/run/airlock/airlock.sock`` (the agents' socket). ``token`` is the agent's token; it is
    sent as ``Authorization: Bearer`` and never appears in a message, a repr or an exception.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: TimeoutTypes = 30.0,
        verify: Union[bool, str] = True,
        allow_insecure_http: bool = False,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        base, uds = _transport_and_base(base_url, allow_insecure_http)
        self.base_url = base_url.rstrip("/")
        if transport is None and uds is not None:
            transport = httpx.HTTPTransport(uds=uds)
        self._http = httpx.Client(
            base_url=base,
            headers=_headers(token),
            timeout=timeout,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AirlockClient({self.base_url!r})"

    def __enter__(self) -> "AirlockClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> JSON:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise _unreachable(e) from None
        return _envelope(resp)

    def health(self) -> bool:
        """Whether the broker answers ``GET /healthz`` with ``{"ok": true}``."""
        try:
            return self._request("GET", "/healthz").get("ok") is True
        except AirlockError:
            return False

    def list_tools(self, format: str = "mcp") -> List[JSON]:
        """``GET /v1/tools?format=…``: the tool definitions this agent may call, as the broker renders them."""
        return _tools_of(self._request("GET", "/v1/tools", params={"format": _check_format(format)}))

    def tools(self) -> List[Tool]:
        """The tools this agent may call, typed."""
        return [Tool.from_mcp(t) for t in self.list_tools("mcp")]

    def invoke(self, tool: str, arguments: Optional[Mapping[str, Any]] = None) -> Invocation:
        """``POST /v1/invoke``: the request id and the scrubbed result; a refusal raises :class:`AirlockError`."""
        return _invocation(self._request("POST", "/v1/invoke", json=_invoke_body(tool, arguments)))

    def call(self, tool: str, arguments: Optional[Mapping[str, Any]] = None) -> JSON:
        """Calls ``tool`` with ``arguments`` and returns its (scrubbed) result."""
        return self.invoke(tool, arguments).result

    def share_secret(self, credential_handle: str, recipient: str, *, views: Optional[int] = None, expires_in: Optional[int] = None) -> JSON:
        """A one-time link to the handle's secret, delivered to ``recipient`` through its channel.

        Returns ``{share_id, expires_at, recipient}``; the link never comes back to the agent.
        """
        return self.call("share_secret", _share_args(credential_handle, recipient, views, expires_in))

    def share_status(self, share_id: str) -> JSON:
        """``GET /v1/shares/{id}``: whether and when a link this agent made was opened
        (``share_id, recipient, opened, views, views_used, first_opened_at, last_opened_at, expires_at``)."""
        return _without_ok(self._request("GET", f"/v1/shares/{_path_id(share_id)}"))

    def revoke_share(self, share_id: str) -> JSON:
        """``DELETE /v1/shares/{id}``: revokes a live link this agent made."""
        return _invocation(self._request("DELETE", f"/v1/shares/{_path_id(share_id)}")).result

    def request_secret(
        self,
        handle: str,
        description: str,
        kind: str,
        recipient: str,
        *,
        destination: Optional[str] = None,
        methods: Optional[Sequence[str]] = None,
        inject: Optional[Mapping[str, Any]] = None,
        scope: Optional[str] = None,
        format: Optional[Mapping[str, Any]] = None,
        expires_in: Optional[int] = None,
    ) -> JSON:
        """Asks a person for a secret that lands as the new handle ``handle`` (README "Requests for a secret").

        Returns ``{request_id, handle, expires_at, recipient, status}``; poll :meth:`request_status`.
        """
        args = _request_args(handle, description, kind, recipient, destination, methods, inject, scope, format, expires_in)
        return self.call("request_secret", args)

    def request_status(self, request_id: str) -> JSON:
        """``pending``, ``received`` (with the approval page), ``approved``, ``rejected``, ``expired`` or ``revoked`` (by an operator)."""
        return self.call("request_status", {"request_id": request_id})


class AsyncAirlockClient:
    """The asyncio twin of :class:`AirlockClient`: the same methods, awaited."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: TimeoutTypes = 30.0,
        verify: Union[bool, str] = True,
        allow_insecure_http: bool = False,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        base, uds = _transport_and_base(base_url, allow_insecure_http)
        self.base_url = base_url.rstrip("/")
        if transport is None and uds is not None:
            transport = httpx.AsyncHTTPTransport(uds=uds)
        self._http = httpx.AsyncClient(
            base_url=base,
            headers=_headers(token),
            timeout=timeout,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AsyncAirlockClient({self.base_url!r})"

    async def __aenter__(self) -> "AsyncAirlockClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> JSON:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise _unreachable(e) from None
        return _envelope(resp)

    async def health(self) -> bool:
        try:
            return (await self._request("GET", "/healthz")).get("ok") is True
        except AirlockError:
            return False

    async def list_tools(self, format: str = "mcp") -> List[JSON]:
        return _tools_of(await self._request("GET", "/v1/tools", params={"format": _check_format(format)}))

    async def tools(self) -> List[Tool]:
        return [Tool.from_mcp(t) for t in await self.list_tools("mcp")]

    async def invoke(self, tool: str, arguments: Optional[Mapping[str, Any]] = None) -> Invocation:
        return _invocation(await self._request("POST", "/v1/invoke", json=_invoke_body(tool, arguments)))

    async def call(self, tool: str, arguments: Optional[Mapping[str, Any]] = None) -> JSON:
        return (await self.invoke(tool, arguments)).result

    async def share_secret(self, credential_handle: str, recipient: str, *, views: Optional[int] = None, expires_in: Optional[int] = None) -> JSON:
        return await self.call("share_secret", _share_args(credential_handle, recipient, views, expires_in))

    async def share_status(self, share_id: str) -> JSON:
        return _without_ok(await self._request("GET", f"/v1/shares/{_path_id(share_id)}"))

    async def revoke_share(self, share_id: str) -> JSON:
        return _invocation(await self._request("DELETE", f"/v1/shares/{_path_id(share_id)}")).result

    async def request_secret(
        self,
        handle: str,
        description: str,
        kind: str,
        recipient: str,
        *,
        destination: Optional[str] = None,
        methods: Optional[Sequence[str]] = None,
        inject: Optional[Mapping[str, Any]] = None,
        scope: Optional[str] = None,
        format: Optional[Mapping[str, Any]] = None,
        expires_in: Optional[int] = None,
    ) -> JSON:
        args = _request_args(handle, description, kind, recipient, destination, methods, inject, scope, format, expires_in)
        return await self.call("request_secret", args)

    async def request_status(self, request_id: str) -> JSON:
        return await self.call("request_status", {"request_id": request_id})
