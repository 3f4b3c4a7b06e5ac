"""The one exception the client raises."""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["AirlockError", "UNREACHABLE", "INVALID_RESPONSE"]

#: Client-side code: no HTTP answer (connection refused, timeout, TLS failure). ``status`` is None.
UNREACHABLE = "unreachable"
#: Client-side code: the answer was not airlock's JSON envelope. ``status`` is the HTTP status.
INVALID_RESPONSE = "invalid-response"


class AirlockError(Exception):
    """A refusal or failure of a call to airlock.

    ``code`` is the stable kebab-case code of the REST error body (``handle-unavailable``,
    ``unauthenticated``, ``destination-not-allowed``, ...; README "Error codes"), or one of the
    two client-side codes ``unreachable`` and ``invalid-response``. ``status`` is the HTTP status
    (None when the broker did not answer), ``detail`` the broker's message, which by contract
    never holds a secret or the agent's data. The text of the exception is built from these
    three only: never from the arguments of the call or the token.
    """

    code: str
    status: Optional[int]
    detail: str
    request_id: Optional[str]
    approval: Optional[Dict[str, Any]]

    def __init__(
        self,
        code: str,
        status: Optional[int] = None,
        detail: str = "",
        *,
        request_id: Optional[str] = None,
        approval: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.code = code
        self.status = status
        self.detail = detail
        #: The broker's id of the call (in its audit log), when it answered with one.
        self.request_id = request_id
        #: ``error.approval`` of ``approval-required`` / ``approval-denied``: id, url, status, expires_at.
        self.approval = approval
        super().__init__(self._text())

    def _text(self) -> str:
        where = f" ({self.status})" if self.status is not None else ""
        return f"{self.code}{where}: {self.detail}" if self.detail else f"{self.code}{where}"

    def __repr__(self) -> str:
        return f"AirlockError(code={self.code!r}, status={self.status!r}, detail={self.detail!r})"

    def to_dict(self) -> Dict[str, Any]:
        """The error as the REST envelope's ``error`` object (what a model may be shown)."""
        d: Dict[str, Any] = {"code": self.code, "message": self.detail}
        if self.approval is not None:
            d["approval"] = self.approval
        return d

    def __reduce__(self) -> Any:
        return (_rebuild, (self.code, self.status, self.detail, self.request_id, self.approval))


def _rebuild(code: str, status: Optional[int], detail: str, request_id: Optional[str], approval: Optional[Dict[str, Any]]) -> AirlockError:
    return AirlockError(code, status, detail, request_id=request_id, approval=approval)
